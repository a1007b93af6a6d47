"""The Dagster instance of the platform: ``$DAGSTER_HOME/dagster.yaml``.

``make up`` calls :func:`ensure_dagster_home` before starting ``dagster-webserver`` and
``dagster-daemon`` with ``DAGSTER_HOME`` set, so run history, sensor cursors and asset
events survive restarts. The file is rewritten on every call: it is generated, not edited.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from finpipe.settings import Settings

STREAM_TAG = "finpipe/stream"
"""Run tag naming the long-running stream a run belongs to (``producer`` / ``spark``)."""

LIVE_RUN_STATUSES = frozenset({"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"})
"""Run statuses (``DagsterRunStatus.value``) of a run that has not finished."""

LIVE_RUN_STATUS_FILTER = [DagsterRunStatus(status) for status in sorted(LIVE_RUN_STATUSES)]
"""The same, as ``RunsFilter(statuses=...)`` takes them."""

MAX_CONCURRENT_RUNS = 6

MAINTENANCE_POOL = "lake_maintenance"
"""The Dagster pool of every op and asset that commits maintenance (compaction, vacuum)
to a lake table: the instance gives each pool one slot, so two never run at once, in one
run or in several (two concurrent compactions of a partition double its rows in
deltalake 1.6.6: ``finpipe_dagster/lake/maintenance.py``)."""

MAINTENANCE_TAG = "finpipe/maintenance"
"""Run tag of the runs that commit maintenance to the lake: the run queue starts one at a
time (a second waits queued, instead of holding a worker while it waits for the pool)."""

POOL_DEFAULT_LIMIT = 1

FREE_SLOTS_AFTER_RUN_END_SECONDS = 60
"""How long after a run ended the daemon frees pool slots it still holds: a step killed
with its run never frees its own; a minute leaves a step that is ending time to."""

POSTGRES_URL_VAR = "DAGSTER_POSTGRES_URL"
"""The variable Dagster reads the PostgreSQL URL from (``env:`` in dagster.yaml)."""


def postgres_storage() -> dict[str, Any]:
    """dagster.yaml's ``storage`` block for PostgreSQL (dagster-postgres).

    It names the variable, not the URL: the password never lands in the file, and every
    Dagster process (webserver, daemon, run workers) resolves it from its environment.
    One database holds runs, the event log (asset history) and schedule/sensor state.
    ``infra.stack`` passes the variable to the Dagster processes it starts.
    """
    return {"storage": {"postgres": {"postgres_url": {"env": POSTGRES_URL_VAR}}}}


def instance_config(settings: Settings | None = None) -> dict[str, Any]:
    """dagster.yaml's content.

    * the run queue allows one run per value of :data:`STREAM_TAG`, so a second copy of a
      stream waits in the queue instead of running next to the first one, and one run
      tagged :data:`MAINTENANCE_TAG` at a time;
    * every pool (:data:`MAINTENANCE_POOL`) has one slot: its ops never overlap, whatever
      run they belong to (slots are claimed per op);
    * run retries are on for the runs that ask for them (tag ``dagster/max_retries``: the
      close-day and late-data runs); the default stays 0, so a stream run is never
      re-executed behind its supervisor's back;
    * sensors run in threads, so a slow lake listing never delays the supervisors;
    * run monitoring ends runs stuck while starting or cancelling (it cannot see a dead
      worker of a started run with the default launcher: the supervisors use heartbeats,
      and ``make up`` fails what a crash left live, :func:`fail_runs_left_live`), and frees
      the pool slots of a run that ended without freeing them (a killed step), so a crash
      mid-compaction never blocks the pool for good;
    * telemetry off; skipped sensor ticks are purged after a day (supervisors tick often);
    * with ``DAGSTER_POSTGRES_URL`` set, all storage on PostgreSQL (:func:`postgres_storage`),
      else Dagster's default SQLite files under ``DAGSTER_HOME``.
    """
    storage = (
        postgres_storage()
        if settings is not None and settings.dagster_postgres_url is not None
        else {}
    )
    return {
        **storage,
        "telemetry": {"enabled": False},
        "concurrency": {
            "runs": {
                "max_concurrent_runs": MAX_CONCURRENT_RUNS,
                "tag_concurrency_limits": [
                    {"key": STREAM_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
                    {"key": MAINTENANCE_TAG, "limit": 1},
                ],
            },
            "pools": {"default_limit": POOL_DEFAULT_LIMIT, "granularity": "op"},
        },
        "run_monitoring": {
            "enabled": True,
            "start_timeout_seconds": 180,
            "cancel_timeout_seconds": 90,
            "poll_interval_seconds": 30,
            "free_slots_after_run_end_seconds": FREE_SLOTS_AFTER_RUN_END_SECONDS,
        },
        "run_retries": {"enabled": True, "max_retries": 0},
        "sensors": {"use_threads": True, "num_workers": 4},
        "schedules": {"use_threads": True, "num_workers": 2},
        "retention": {
            "sensor": {"purge_after_days": {"skipped": 1, "success": 14, "failure": 30}},
            "schedule": {"purge_after_days": {"skipped": 1, "success": 14, "failure": 30}},
        },
    }


def ensure_dagster_home(settings: Settings) -> Path:
    """Create ``settings.dagster_home`` with its ``dagster.yaml``; returns the folder."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    text = (
        "# Generated by finpipe_dagster.instance.ensure_dagster_home; changes are overwritten.\n"
        + yaml.safe_dump(instance_config(settings), sort_keys=False)
    )
    tmp = target.with_name(".dagster.yaml.tmp")
    tmp.write_text(text)
    tmp.replace(target)
    return home


WORKER_STATUSES = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
"""Statuses of a run whose worker process has been launched and not yet ended it."""


def run_worker_pids(instance: DagsterInstance, run_id: str) -> list[int]:
    """The processes that reported "Started process for run" for a run (its worker)."""
    pids = []
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None and str(pid.value).isdigit():
            pids.append(int(pid.value))
    return pids


def _dagster_process_alive(pid: int) -> bool:
    """A live process that is a Dagster run worker (not a reused pid of something else)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"dagster" in argv


def fail_runs_left_live(
    instance: DagsterInstance, alive: Callable[[int], bool] = _dagster_process_alive
) -> list[str]:
    """Mark failed every started run whose worker is gone, and free its pool slots.

    ``make up`` calls it before it starts Dagster's processes. After a crash (the machine,
    or every process SIGKILLed) the runs that were live stay STARTED in the run storage:
    the default launcher cannot tell a dead worker, so they would hold a slot of the run
    queue and of their tag's limit (one maintenance run at a time) and their ops' pool
    slots for ever, and no maintenance would run again. A run whose worker still lives (a
    worker survives its daemon) is left alone. Returns the run ids marked failed.
    """
    failed = []
    for record in instance.get_run_records(RunsFilter(statuses=WORKER_STATUSES)):
        run = record.dagster_run
        workers = run_worker_pids(instance, run.run_id)
        if any(alive(pid) for pid in workers):
            continue
        gone = (
            f"its worker (pid {', '.join(map(str, workers))}) is gone"
            if workers
            else ("no worker ever reported")
        )
        instance.report_run_failed(
            run,
            message=(
                f"finpipe: {run.job_name} was {run.status.value} when the platform stopped, and "
                f"{gone}: marked failed at start-up so it blocks no new run"
            ),
        )
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    return failed
