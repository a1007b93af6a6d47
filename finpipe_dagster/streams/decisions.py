"""A stream's state as its supervisor judges it: recent runs, processes, heartbeat, the
decision now.

Shared by the supervisor sensors (``streams/sensors.py``), which carry the decision out,
and the alert sensor, which reports a stream that keeps failing or was stopped.
"""

from __future__ import annotations

import time

from dagster import DagsterInstance, RunsFilter
from dagster._core.storage.dagster_run import RunRecord

from finpipe import health
from finpipe.settings import Settings
from finpipe_dagster.instance import STREAM_TAG
from finpipe_dagster.streams import processes
from finpipe_dagster.streams.policy import (
    SUPERVISOR,
    TERMINATED_BY_TAG,
    Decision,
    Heartbeat,
    Policy,
    ProcessView,
    RunView,
    decide,
)

RECENT_RUNS = 30


def _exit_code(record: RunRecord) -> int | None:
    value = record.dagster_run.tags.get(processes.EXITED_TAG)
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def _progressed_until(record: RunRecord) -> float | None:
    value = record.dagster_run.tags.get(processes.PROGRESSED_UNTIL_TAG)
    if value is None:
        return None
    if value == processes.NEVER_PROGRESSED:  # failed without ever progressing: lived 0 s
        return record.start_time or record.create_timestamp.timestamp()
    try:
        return float(value)
    except ValueError:
        return None


def stream_runs(instance: DagsterInstance, stream: str) -> tuple[list[RunView], list[ProcessView]]:
    """The stream's recent runs, and the processes of those whose exit no worker saw."""
    records = instance.get_run_records(
        RunsFilter(tags={STREAM_TAG: stream}), limit=RECENT_RUNS, ascending=False
    )
    runs, procs = [], []
    for r in records:
        tags = r.dagster_run.tags
        runs.append(
            RunView(
                run_id=r.dagster_run.run_id,
                status=r.dagster_run.status.value,
                create_ts=r.create_timestamp.timestamp(),
                start_ts=r.start_time,
                end_ts=r.end_time,
                terminated_by_supervisor=tags.get(TERMINATED_BY_TAG) == SUPERVISOR,
                exit_code=_exit_code(r),
                last_error=tags.get(processes.LAST_ERROR_TAG),
                progressed_until=_progressed_until(r),
            )
        )
        identity = tags.get(processes.PROCESS_TAG)
        if identity and processes.EXITED_TAG not in tags:
            parsed = processes.parse_identity(identity)
            procs.append(
                ProcessView(
                    run_id=r.dagster_run.run_id,
                    pid=parsed[1] if parsed else -1,
                    state=processes.probe(identity),
                    where=processes.describe(identity),
                    identity=identity,
                )
            )
    return runs, procs


def read_heartbeat(settings: Settings, stream: str) -> Heartbeat | None:
    beat = health.read_health(settings, stream)
    if not beat or health.HEARTBEAT_KEY not in beat:
        return None
    pid = beat.get("pid")
    progress = beat.get(health.PROGRESS_KEY)
    return Heartbeat(
        ts=float(beat[health.HEARTBEAT_KEY]),
        run_id=beat.get(health.RUN_ID_KEY),
        pid=int(pid) if isinstance(pid, int) else None,
        starting=beat.get("status") == "starting",
        reports_progress=health.PROGRESS_KEY in beat,
        progress_ts=float(progress) if isinstance(progress, int | float) else None,
    )


def current_decision(
    instance: DagsterInstance,
    settings: Settings,
    policy: Policy,
    stream: str,
    resumed_at: float | None = None,
) -> Decision:
    """What the supervisor of ``stream`` would decide now (the alert sensor asks too)."""
    runs, procs = stream_runs(instance, stream)
    return decide(
        runs, read_heartbeat(settings, stream), time.time(), policy, procs, resumed_at=resumed_at
    )
