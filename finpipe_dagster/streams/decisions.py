"""A stream's state as its supervisor judges it: recent runs, heartbeat, the decision now.

Shared by the supervisor sensors (``streams/sensors.py``), which carry the decision out,
and the alert sensor, which reports a supervisor that gave up.
"""

import time

from dagster import DagsterInstance, RunsFilter

from finpipe import health
from finpipe_dagster.instance import STREAM_TAG
from finpipe_dagster.resources.finpipe_settings import FinpipeSettings
from finpipe_dagster.streams.policy import (
    SUPERVISOR,
    TERMINATED_BY_TAG,
    Decision,
    Policy,
    RunView,
    decide,
)

RECENT_RUNS = 30


def recent_runs(instance: DagsterInstance, stream: str) -> list[RunView]:
    records = instance.get_run_records(
        RunsFilter(tags={STREAM_TAG: stream}), limit=RECENT_RUNS, ascending=False
    )
    return [
        RunView(
            run_id=r.dagster_run.run_id,
            status=r.dagster_run.status.value,
            create_ts=r.create_timestamp.timestamp(),
            start_ts=r.start_time,
            end_ts=r.end_time,
            terminated_by_supervisor=r.dagster_run.tags.get(TERMINATED_BY_TAG) == SUPERVISOR,
        )
        for r in records
    ]


def current_decision(
    instance: DagsterInstance, settings: FinpipeSettings, policy: Policy, stream: str
) -> Decision:
    """What the supervisor of ``stream`` would decide now."""
    beat = health.read_health(settings.load(), stream)
    heartbeat_ts = float(beat[health.HEARTBEAT_KEY]) if beat else None
    return decide(recent_runs(instance, stream), heartbeat_ts, time.time(), policy)
