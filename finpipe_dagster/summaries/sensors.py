"""Refreshes today's summaries about every minute while the lake receives data.

The minute is a setting: ``SUMMARIES_REFRESH_SENSOR_INTERVAL_SECONDS``.
"""

import json

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from finpipe.settings import Settings
from finpipe_dagster.instance import LIVE_RUN_STATUS_FILTER as IN_PROGRESS
from finpipe_dagster.lake.assets import PROCESSED_TRADES
from finpipe_dagster.partitions import today_utc
from finpipe_dagster.summaries.jobs import REFRESH_TAG, summaries_job


def request_refresh(context: SensorEvaluationContext) -> RunRequest | SkipReason:
    """One tick of ``summaries_refresh_sensor``."""
    latest = context.instance.fetch_materializations(PROCESSED_TRADES, limit=1).records
    if not latest:
        return SkipReason("processed_trades has no recorded update yet")
    event = latest[0]
    cursor = json.loads(context.cursor or "{}")
    if event.storage_id == cursor.get("storage_id"):
        return SkipReason("no new lake data since the last refresh")
    running = context.instance.get_run_records(
        RunsFilter(
            job_name=summaries_job.name, statuses=IN_PROGRESS, tags={REFRESH_TAG: "refresh"}
        ),
        limit=1,
    )
    if running:
        return SkipReason(f"refresh {running[0].dagster_run.run_id} still in progress")
    day = today_utc().isoformat()
    context.update_cursor(json.dumps({"storage_id": event.storage_id, "day": day}))
    return RunRequest(run_key=f"refresh-{day}-{event.storage_id}", partition_key=day)


def build_summaries_refresh_sensor(settings: Settings) -> SensorDefinition:
    return sensor(
        job=summaries_job,
        name="summaries_refresh_sensor",
        minimum_interval_seconds=settings.summaries_refresh_sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Rebuilds today's summaries when processed_trades got new data (one at a time)."
        ),
    )(request_refresh)
