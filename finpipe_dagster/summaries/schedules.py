"""Time-based runs: closing yesterday after midnight UTC."""

import datetime as dt

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    schedule,
)

from finpipe_dagster.summaries.jobs import close_day_job


@schedule(
    job=close_day_job,
    cron_schedule="20 0 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="At 00:20 UTC: final summaries of yesterday, then its compaction.",
)
def close_day_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    # 20 minutes after midnight, so that batches in flight at midnight have landed.
    scheduled = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    day = (scheduled.astimezone(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    return RunRequest(run_key=f"close-{day}", partition_key=day)
