"""The summaries domain's definitions."""

from dagster import Definitions

from finpipe.settings import Settings
from finpipe_dagster.partitions import daily_partitions
from finpipe_dagster.summaries.assets import daily_summaries_asset
from finpipe_dagster.summaries.jobs import close_day_job, summaries_job
from finpipe_dagster.summaries.late_data import build_late_data_summaries_sensor
from finpipe_dagster.summaries.schedules import close_day_schedule
from finpipe_dagster.summaries.sensors import build_summaries_refresh_sensor


def build_defs(settings: Settings) -> Definitions:
    return Definitions(
        assets=[daily_summaries_asset(daily_partitions(settings))],
        jobs=[summaries_job, close_day_job],
        sensors=[
            build_summaries_refresh_sensor(settings),
            build_late_data_summaries_sensor(settings),
        ],
        schedules=[close_day_schedule],
    )
