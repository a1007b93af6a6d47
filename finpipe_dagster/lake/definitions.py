"""The lake domain's definitions."""

from dagster import Definitions

from finpipe.settings import Settings
from finpipe_dagster.lake.assets import processed_trades_spec, stock_ticks_spec
from finpipe_dagster.lake.checks import processed_trades_quality
from finpipe_dagster.lake.compaction import compacted_trades_asset
from finpipe_dagster.lake.jobs import quality_checks_job
from finpipe_dagster.lake.rolling_compaction import (
    build_rolling_compaction_sensor,
    rolling_compaction_job,
)
from finpipe_dagster.lake.schedules import build_quality_checks_schedule
from finpipe_dagster.lake.sensors import build_processed_trades_sensor
from finpipe_dagster.partitions import daily_partitions


def build_defs(settings: Settings) -> Definitions:
    return Definitions(
        assets=[
            stock_ticks_spec(settings),
            processed_trades_spec(settings),
            compacted_trades_asset(daily_partitions(settings)),
        ],
        asset_checks=[processed_trades_quality],
        jobs=[quality_checks_job, rolling_compaction_job],
        sensors=[
            build_processed_trades_sensor(settings),
            build_rolling_compaction_sensor(settings),
        ],
        schedules=[build_quality_checks_schedule(settings)],
    )
