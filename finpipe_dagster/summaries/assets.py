"""Daily summary tables built with DuckDB from the lake and published as Parquet.

One multi-asset computes the three tables of each day from one connection over that
day's lake files; a backfill of many days is one run (``BackfillPolicy.single_run``).
Publishing replaces a day's object in one PUT, so re-running a day is idempotent and the
dashboard never reads a half-written table.
"""

import datetime as dt
from collections.abc import Iterator

import duckdb
import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    multi_asset,
)

from finpipe import summaries
from finpipe_dagster.lake.assets import PROCESSED_TRADES
from finpipe_dagster.partitions import partition_days
from finpipe_dagster.resources import DuckDBResource, FinpipeSettings
from finpipe_dagster.summaries import sql as summary_sql

SUMMARY_SPECS = [
    AssetSpec(
        summaries.OHLCV_1M,
        deps=[PROCESSED_TRADES],
        description="1-minute OHLCV bars per symbol with VWAP and trade count.",
    ),
    AssetSpec(
        summaries.DAILY_SYMBOL_STATS,
        deps=[PROCESSED_TRADES],
        description=(
            "Per symbol and day: OHLC, volume, traded value, trade count, VWAP, high-low "
            "range, realized volatility (sqrt of summed squared 1-minute log returns)."
        ),
    ),
    AssetSpec(
        summaries.LATEST_PRICES,
        deps=[PROCESSED_TRADES],
        description="The day's latest trade per symbol, with the time it was computed.",
    ),
]


def daily_summaries(
    context: AssetExecutionContext, finpipe: FinpipeSettings, lake_duckdb: DuckDBResource
) -> Iterator[MaterializeResult]:
    settings = finpipe.load()
    days = partition_days(list(context.partition_keys))
    wanted = {key.to_user_string() for key in context.selected_asset_keys}
    rows_per_day: dict[str, dict[str, int]] = {name: {} for name in wanted}
    for day in days:
        con = lake_duckdb.with_lake([day])
        try:
            for name in sorted(wanted):
                table = _build(con, name, day)
                key = summaries.publish(settings, name, day, table)
                rows_per_day[name][day.isoformat()] = table.num_rows
                context.log.info(f"published {name} {day}: {table.num_rows} rows -> s3://{key}")
        finally:
            con.close()
    for name in sorted(wanted):
        yield MaterializeResult(
            asset_key=name,
            metadata={
                "rows": MetadataValue.int(sum(rows_per_day[name].values())),
                "rows_per_day": MetadataValue.json(rows_per_day[name]),
                "location": MetadataValue.text(
                    f"s3://{settings.s3_bucket}/{settings.summaries_prefix}/{name}/"
                ),
            },
        )


def _build(con: duckdb.DuckDBPyConnection, name: str, day: dt.date) -> pa.Table:
    if name == summaries.OHLCV_1M:
        return summary_sql.ohlcv_1m(con, day)
    if name == summaries.DAILY_SYMBOL_STATS:
        return summary_sql.daily_symbol_stats(con, day)
    return summary_sql.latest_prices(con, day, dt.datetime.now(dt.UTC))


def daily_summaries_asset(partitions: PartitionsDefinition) -> AssetsDefinition:
    """The multi-asset over the code location's daily partitions (built at load)."""
    return multi_asset(
        specs=[
            spec.replace_attributes(group_name="summaries", kinds={"duckdb", "parquet"})
            for spec in SUMMARY_SPECS
        ],
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        can_subset=True,
    )(daily_summaries)
