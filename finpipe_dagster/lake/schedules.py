"""The lake's schedules: the periodic checks, whose results feed the alerts, and the weekly
orphan sweep."""

from collections.abc import Callable

from dagster import (
    DagsterInvalidDefinitionError,
    DefaultScheduleStatus,
    JobDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

from finpipe.settings import Settings, SettingsError
from finpipe_dagster.lake.jobs import quality_checks_job
from finpipe_dagster.lake.orphan_sweep import orphan_sweep_job


def request_quality_checks(context: ScheduleEvaluationContext) -> RunRequest:
    """One tick of ``processed_trades_checks_schedule``."""
    return RunRequest()


def request_orphan_sweep(context: ScheduleEvaluationContext) -> RunRequest:
    """One tick of ``orphan_sweep_schedule``: a run even while another maintenance run is
    live (the run queue holds it until that one ends), so no week goes unswept."""
    return RunRequest()


def _on_cron(
    variable: str,
    cron: str,
    *,
    job: JobDefinition,
    name: str,
    description: str,
    evaluate: Callable[[ScheduleEvaluationContext], RunRequest],
) -> ScheduleDefinition:
    """A schedule of ``job`` on the cron expression the setting ``variable`` holds (UTC)."""
    try:
        return schedule(
            job=job,
            cron_schedule=cron,
            execution_timezone="UTC",
            default_status=DefaultScheduleStatus.RUNNING,
            name=name,
            description=description,
        )(evaluate)
    except DagsterInvalidDefinitionError as exc:
        # Settings accepted its shape; Dagster's parser refuses what it cannot schedule
        # (a minute 61, February 30th): say so the way every other bad setting is said.
        raise SettingsError(
            f"invalid finpipe settings:\n  {variable}: '{cron}' is not a cron expression "
            "Dagster accepts, e.g. '*/10 * * * *' for every 10 minutes"
        ) from exc


def build_quality_checks_schedule(settings: Settings) -> ScheduleDefinition:
    """The checks on ``QUALITY_CHECKS_CRON`` (every 10 minutes by default)."""
    return _on_cron(
        "QUALITY_CHECKS_CRON",
        settings.quality_checks_cron,
        job=quality_checks_job,
        name="processed_trades_checks_schedule",
        description="The lake's quality checks, on QUALITY_CHECKS_CRON (results feed the alerts).",
        evaluate=request_quality_checks,
    )


def build_orphan_sweep_schedule(settings: Settings) -> ScheduleDefinition:
    """The orphan sweep on ``ORPHAN_SWEEP_CRON`` (Sundays at 03:45 UTC by default)."""
    return _on_cron(
        "ORPHAN_SWEEP_CRON",
        settings.orphan_sweep_cron,
        job=orphan_sweep_job,
        name="orphan_sweep_schedule",
        description=(
            "The weekly orphan sweep, on ORPHAN_SWEEP_CRON: files no commit names deleted "
            "from every table once they are a week old."
        ),
        evaluate=request_orphan_sweep,
    )
