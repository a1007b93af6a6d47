"""Supervisor sensors: exactly one live run of each stream, restarted with backoff.

The local run launcher cannot tell that a run worker died (its run stays STARTED), so
liveness is judged from the stream's heartbeat file. Each tick's decision goes to the
cursor (visible in the UI) and to the sensor's log.
"""

import json
import time

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

from finpipe.health import PRODUCER, SPARK
from finpipe_dagster.instance import STREAM_TAG
from finpipe_dagster.resources.finpipe_settings import FinpipeSettings
from finpipe_dagster.streams.decisions import current_decision
from finpipe_dagster.streams.jobs import STREAM_JOBS
from finpipe_dagster.streams.policy import SUPERVISOR, TERMINATED_BY_TAG
from finpipe_dagster.streams.resources import SupervisionPolicy


def terminate_run(instance: DagsterInstance, run_id: str, reason: str) -> str:
    """Ask the run's worker to stop; a worker that cannot be reached is dead: fail the run."""
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
        return "marked failed (worker unreachable)"
    return "termination requested" if asked else "finished"


def supervisor_sensor(stream: str, job: JobDefinition) -> SensorDefinition:
    @sensor(
        name=f"{stream}_supervisor",
        job=job,
        minimum_interval_seconds=10,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Keeps exactly one live run of {job.name}; restarts it with backoff.",
    )
    def supervise(
        context: SensorEvaluationContext, finpipe: FinpipeSettings, supervision: SupervisionPolicy
    ) -> RunRequest | SkipReason:
        now = time.time()
        decision = current_decision(context.instance, finpipe, supervision.policy(), stream)
        outcomes = {
            run_id: terminate_run(context.instance, run_id, decision.reason)
            for run_id in decision.terminate
        }
        context.log.info(f"{stream} supervisor: {decision.action}: {decision.reason} {outcomes}")
        context.update_cursor(
            json.dumps({**decision.as_cursor(stream, now), "terminated": outcomes})
        )
        replaced_now = decision.action == "replace" and all(
            (r := context.instance.get_run_by_id(run_id)) is None or r.is_finished
            for run_id in decision.terminate
        )
        if decision.action == "launch" or replaced_now:
            return RunRequest(
                tags={STREAM_TAG: stream, "finpipe/launched_by": SUPERVISOR},
            )
        return SkipReason(f"{decision.action}: {decision.reason}")

    return supervise


producer_supervisor = supervisor_sensor(PRODUCER, STREAM_JOBS[PRODUCER])
spark_supervisor = supervisor_sensor(SPARK, STREAM_JOBS[SPARK])
