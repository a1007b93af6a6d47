"""Time-based runs: closing yesterday after midnight UTC."""

import datetime as dt

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    schedule,
)

from finpipe_dagster.summaries.jobs import close_day_job

CLOSE_DELAY = dt.timedelta(minutes=20)
"""How long after midnight UTC a day is closed (the cron below says the same): batches in
flight at midnight have landed by then."""


@schedule(
    job=close_day_job,
    cron_schedule="20 0 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description=(
        "At 00:20 UTC: final summaries of yesterday, then its compaction (a failed run is "
        "retried, and late_data_summaries_sensor requests the day again if it stays behind)."
    ),
)
def close_day_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    scheduled = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    day = (scheduled.astimezone(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    return RunRequest(run_key=f"close-{day}", partition_key=day)
