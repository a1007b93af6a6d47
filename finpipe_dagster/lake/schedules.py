"""The periodic lake checks, whose results feed the alerts."""

from dagster import (
    DagsterInvalidDefinitionError,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from finpipe.settings import Settings, SettingsError
from finpipe_dagster.lake.jobs import quality_checks_job


def request_quality_checks(context: ScheduleEvaluationContext) -> RunRequest:
    """One tick of ``processed_trades_checks_schedule``."""
    return RunRequest()


def build_quality_checks_schedule(settings: Settings) -> ScheduleDefinition:
    """The checks on ``QUALITY_CHECKS_CRON`` (every 10 minutes by default)."""
    try:
        return schedule(
            job=quality_checks_job,
            cron_schedule=settings.quality_checks_cron,
            execution_timezone="UTC",
            default_status=DefaultScheduleStatus.RUNNING,
            name="processed_trades_checks_schedule",
            description=(
                "The lake's quality checks, on QUALITY_CHECKS_CRON (results feed the alerts)."
            ),
        )(request_quality_checks)
    except DagsterInvalidDefinitionError as exc:
        # Settings accepted its shape; Dagster's parser refuses what it cannot schedule
        # (a minute 61, February 30th): say so the way every other bad setting is said.
        raise SettingsError(
            "invalid finpipe settings:\n  QUALITY_CHECKS_CRON: "
            f"'{settings.quality_checks_cron}' is not a cron expression Dagster accepts, "
            "e.g. '*/10 * * * *' for every 10 minutes"
        ) from exc
