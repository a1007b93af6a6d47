"""The periodic lake checks, whose results feed the alerts."""

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    schedule,
)

from finpipe_dagster.lake.jobs import quality_checks_job


@schedule(
    job=quality_checks_job,
    cron_schedule="*/10 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    name="processed_trades_checks_schedule",
    description="Every 10 minutes: the lake's quality checks (results feed the alerts).",
)
def quality_checks_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    return RunRequest()
