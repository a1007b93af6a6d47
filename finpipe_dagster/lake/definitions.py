"""The lake domain's definitions."""

from dagster import Definitions

from finpipe_dagster.lake.assets import processed_trades, stock_ticks
from finpipe_dagster.lake.checks import processed_trades_quality
from finpipe_dagster.lake.compaction import compacted_trades
from finpipe_dagster.lake.sensors import processed_trades_sensor

defs = Definitions(
    assets=[stock_ticks, processed_trades, compacted_trades],
    asset_checks=[processed_trades_quality],
    sensors=[processed_trades_sensor],
)
