"""The lake domain's definitions."""

from dagster import Definitions

from finpipe.settings import Settings
from finpipe_dagster.lake.assets import processed_trades_spec, stock_ticks_spec
from finpipe_dagster.lake.checks import processed_trades_quality
from finpipe_dagster.lake.jobs import quality_checks_job
from finpipe_dagster.lake.maintenance import (
    build_lake_maintenance_sensor,
    compacted_trades_asset,
    lake_maintenance_job,
)
from finpipe_dagster.lake.orphan_sweep import orphan_sweep_job
from finpipe_dagster.lake.schedules import (
    build_orphan_sweep_schedule,
    build_quality_checks_schedule,
)
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
        jobs=[quality_checks_job, lake_maintenance_job, orphan_sweep_job],
        sensors=[
            build_processed_trades_sensor(settings),
            build_lake_maintenance_sensor(settings),
        ],
        schedules=[
            build_quality_checks_schedule(settings),
            build_orphan_sweep_schedule(settings),
        ],
    )
