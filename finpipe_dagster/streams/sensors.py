"""Supervisor sensors: exactly one live run of each stream, restarted with backoff for ever.

The local run launcher cannot tell that a run worker died (its run stays STARTED), so
liveness is judged from the stream's heartbeat file, which names the run and pid it comes
from. No replacement starts before the old stream process is confirmed gone. Each tick's
decision is the tick's skip reason, goes to the cursor and to the sensor's log, and a
launched run carries it as a tag.

Resuming after a fault no retry fixes: turn the sensor off and on (Automation in the UI,
or ``dagster sensor stop``/``start``). Dagster keeps the cursor across that and records the
start time, which the decision reads as "the operator fixed it".
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from dagster import (
    DagsterInstance,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from finpipe.settings import Settings
from finpipe_dagster.instance import STREAM_TAG
from finpipe_dagster.resources.finpipe_settings import FinpipeSettings
from finpipe_dagster.streams import processes
from finpipe_dagster.streams.decisions import current_decision
from finpipe_dagster.streams.jobs import STREAM_JOBS
from finpipe_dagster.streams.policy import (
    SUPERVISOR,
    TERMINATED_BY_TAG,
    Decision,
    Policy,
    ProcessView,
)
from finpipe_dagster.streams.resources import SupervisionPolicy

LAUNCHED_BY_TAG = "finpipe/launched_by"
DECISION_TAG = "finpipe/decision"
WAIT_IN_TICK_SECONDS = 2.0
"""How long one tick waits for a signalled process: ticks stay short, the next one looks again."""


def terminate_run(instance: DagsterInstance, run_id: str, reason: str) -> str:
    """End a run whose stream process is confirmed gone (or never started).

    Asks the run's worker to stop; a worker that cannot be reached is dead: fail the run.
    """
    run = instance.get_run_by_id(run_id)
    if run is None or run.is_finished:
        return "already finished"
    instance.add_run_tags(run_id, {TERMINATED_BY_TAG: SUPERVISOR})
    try:
        asked = instance.run_coordinator.cancel_run(run_id)
    except Exception as exc:  # a launcher that cannot terminate is handled like a dead worker
        asked = False
        reason = f"{reason}; termination request failed: {exc}"
    run = instance.get_run_by_id(run_id)
    if run is not None and not run.is_finished and not asked:
        instance.report_run_failed(run, message=f"finpipe supervisor: {reason}")
        return "marked failed (worker unreachable, process gone)"
    return "termination requested" if asked else "finished"


def request_termination(instance: DagsterInstance, run_id: str) -> str:
    """Ask a run's worker to stop, never marking the run ended: its process still lives."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.is_finished:
        return "already finished"
    instance.add_run_tags(run_id, {TERMINATED_BY_TAG: SUPERVISOR})
    try:
        asked = instance.run_coordinator.cancel_run(run_id)
    except Exception as exc:
        return f"worker not reachable ({type(exc).__name__}); stopping its process by pid"
    return "termination requested" if asked else "worker not reachable; stopping by pid"


def stop_process(
    process: ProcessView, signalled: dict[str, float], now: float, grace: float
) -> str:
    """SIGTERM on first sight, SIGKILL once ``grace`` passed; says whether it is gone."""
    first = signalled.setdefault(process.identity, now)
    steps = [processes.send_signal(process.identity, signal.SIGTERM)] if first == now else []
    gone = processes.wait_gone(process.identity, min(grace, WAIT_IN_TICK_SECONDS))
    if not gone and time.time() - first >= grace:
        steps.append(processes.send_signal(process.identity, signal.SIGKILL))
        gone = processes.wait_gone(process.identity, WAIT_IN_TICK_SECONDS)
    if not gone and not steps:
        steps.append(f"SIGTERM sent {now - first:.0f}s ago; SIGKILL after {grace:.0f}s")
    return "; ".join([*steps, "confirmed gone" if gone else "still alive"])


def _carry_out(
    context: SensorEvaluationContext,
    decision: Decision,
    previous: dict[str, Any],
    now: float,
    policy: Policy,
) -> tuple[dict[str, str], dict[str, float]]:
    instance = context.instance
    outcomes: dict[str, str] = {}
    signalled: dict[str, float] = {}
    if decision.action == "stop_old":
        old = {str(k): float(v) for k, v in previous.get("signalled", {}).items()}
        signalled = {p.identity: old[p.identity] for p in decision.stop if p.identity in old}
        for run_id in decision.terminate:
            outcomes[run_id] = request_termination(instance, run_id)
        for process in decision.stop:
            outcomes[process.where] = stop_process(
                process, signalled, now, policy.kill_grace_seconds
            )
    else:
        for run_id in decision.terminate:
            outcomes[run_id] = terminate_run(instance, run_id, decision.reason)
    return outcomes, signalled


def supervisor_sensor(
    stream: str, job: JobDefinition, minimum_interval_seconds: int
) -> SensorDefinition:
    @sensor(
        name=f"{stream}_supervisor",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            f"Keeps exactly one live run of {job.name}: retries for ever with a capped backoff,"
            " never starts a copy before the old process is gone, stops only on a fault no"
            " retry fixes (resume: turn this sensor off and on)."
        ),
    )
    def supervise(
        context: SensorEvaluationContext, finpipe: FinpipeSettings, supervision: SupervisionPolicy
    ) -> RunRequest | SkipReason:
        now = time.time()
        settings = finpipe.load()
        policy = supervision.policy(settings)
        previous = json.loads(context.cursor or "{}")
        decision = current_decision(
            context.instance, settings, policy, stream, context.last_sensor_start_time
        )
        outcomes, signalled = _carry_out(context, decision, previous, now, policy)
        context.log.info(f"{stream} supervisor: {decision.action}: {decision.reason} {outcomes}")
        cursor = {**decision.as_cursor(stream, now), "terminated": outcomes, "signalled": signalled}
        context.update_cursor(json.dumps(cursor, default=str))
        replaced_now = decision.action == "replace" and all(
            (r := context.instance.get_run_by_id(run_id)) is None or r.is_finished
            for run_id in decision.terminate
        )
        if decision.action == "launch" or replaced_now:
            return RunRequest(
                tags={
                    STREAM_TAG: stream,
                    LAUNCHED_BY_TAG: SUPERVISOR,
                    DECISION_TAG: decision.reason[:250],
                },
            )
        return SkipReason(f"{decision.action}: {decision.reason}")

    return supervise


def build_supervisor_sensors(settings: Settings) -> dict[str, SensorDefinition]:
    """One supervisor per stream (``producer_supervisor``, ``spark_supervisor``), by stream."""
    interval = settings.supervisor_sensor_interval_seconds
    return {stream: supervisor_sensor(stream, job, interval) for stream, job in STREAM_JOBS.items()}
