"""Rebuilds a closed day's summaries when the Spark query writes late trades into it.

Trades can land in a day after it closed: stragglers after midnight, a backlog after an
outage, a replayed session from the past. The lake shows them at once (see
``finpipe.contracts.visible_object_names``); this sensor keeps the summaries in step.
The Spark heartbeat carries, for each lake day written since the job started, the last
committed batch that wrote into it; the cursor remembers the batch each day was last
refreshed for (per lake: batch ids belong to one checkpoint). A closed day with a newer
batch gets one summaries run for its partition; today is the refresh sensor's. (When
Spark runs outside this platform and writes no heartbeat here, backfill such days by
hand.)
"""

import datetime as dt
import json

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from finpipe import health
from finpipe_dagster.partitions import first_day, today_utc
from finpipe_dagster.resources import FinpipeSettings
from finpipe_dagster.summaries.jobs import REFRESH_TAG, summaries_job

# Days whose refreshed batch the cursor keeps (like the heartbeat's own limit).
CURSOR_DAYS = 64


@sensor(
    job=summaries_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Rebuilds a closed day's summaries when late trades land in it.",
)
def late_data_summaries_sensor(
    context: SensorEvaluationContext, finpipe: FinpipeSettings
) -> SensorResult | SkipReason:
    settings = finpipe.load()
    beat = health.read_health(settings, health.SPARK) or {}
    written: dict[str, int] = beat.get(health.LAST_BATCH_BY_DATE_KEY) or {}
    cursor = json.loads(context.cursor or "{}")
    # Batch ids belong to one checkpoint, and a new checkpoint means a new lake prefix.
    same_lake = cursor.get("lake") == settings.lake_uri
    refreshed: dict[str, int] = cursor.get("days", {}) if same_lake else {}
    today = today_utc().isoformat()
    first = first_day(settings)
    late = {
        day: int(batch)
        for day, batch in written.items()
        if first <= day < today and int(batch) > refreshed.get(day, -1) and _is_day(day)
    }
    if not late:
        return SkipReason("no closed day received trades since its last refresh")
    refreshed.update(late)
    recent = sorted(refreshed, key=refreshed.__getitem__)[-CURSOR_DAYS:]
    days = {day: refreshed[day] for day in sorted(recent)}
    context.update_cursor(json.dumps({"lake": settings.lake_uri, "days": days}))
    context.log.info(f"late trades: refreshing the summaries of {sorted(late)}")
    return SensorResult(
        run_requests=[
            RunRequest(
                run_key=f"late-{day}-{batch}",
                partition_key=day,
                tags={REFRESH_TAG: "late"},
            )
            for day, batch in sorted(late.items())
        ]
    )


def _is_day(value: str) -> bool:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True
