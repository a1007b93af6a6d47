"""Daily summary tables built with DuckDB from the lake and published as Delta tables.

One multi-asset computes the three tables of each day from one connection over that
day's lake files; a backfill of many days is one run (``BackfillPolicy.single_run``).
Publishing replaces a day's partition of each table in one commit
(``finpipe.summaries.publish``), so re-running a day is idempotent and the dashboard
never reads a half-written day.

Each materialization records, per day, the newest batch it read in each symbol folder
(``lake_batch_ids``) and the lake it read (``lake``): durable state from which the
late-data sensor tells which closed days received batches since (``late_data.py``). The
same state goes with each commit as its metadata, and ``table_version`` is the version
of the table after the run's last publish.
"""

import datetime as dt
from collections.abc import Iterator

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

from finpipe import lake, summaries
from finpipe.settings import Settings
from finpipe_dagster.lake.assets import PROCESSED_TRADES
from finpipe_dagster.partitions import partition_days, today_utc
from finpipe_dagster.resources import DuckDBResource, FinpipeSettings
from finpipe_dagster.summaries import incremental

LAKE_KEY = "lake"
BATCH_IDS_KEY = "lake_batch_ids"
"""Metadata of each summary materialization: {day: {symbol: newest batch id read}}."""

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
    wanted = sorted(key.to_user_string() for key in context.selected_asset_keys)
    rows_per_day: dict[str, dict[str, int]] = {name: {} for name in wanted}
    versions: dict[str, int] = {}
    batch_ids: dict[str, dict[str, int]] = {}
    for day in days:
        tables, batch_ids[day.isoformat()], state, report = lake.read_relisting(
            lambda day=day: _build_day(settings, lake_duckdb, day, wanted),
            what=f"summaries of {day}",
        )
        source = summaries.LakeState(settings.lake_uri, batch_ids[day.isoformat()])
        for name, table in tables.items():
            published = summaries.publish(settings, name, day, table, source=source)
            if published.pre_delta_days:
                context.log.warning(
                    summaries.pre_delta_message(settings, name, list(published.pre_delta_days))
                )
            rows_per_day[name][day.isoformat()] = table.num_rows
            versions[name] = published.version
            context.log.info(
                f"published {name} {day}: {table.num_rows} rows, version {published.version}"
                f" of {summaries.table_uri(settings, name)}"
            )
        # After the tables: a run stopped in between leaves the older state, whose next
        # refresh reads the same new objects again.
        incremental.save_state(settings, lake.s3_filesystem(settings), day, state)
        context.log.info(f"summaries of {day}: {report}")
    for name in wanted:
        yield MaterializeResult(
            asset_key=name,
            metadata={
                "rows": MetadataValue.int(sum(rows_per_day[name].values())),
                "rows_per_day": MetadataValue.json(rows_per_day[name]),
                "location": MetadataValue.text(summaries.table_uri(settings, name)),
                "table_version": MetadataValue.int(versions[name]),
                LAKE_KEY: MetadataValue.text(settings.lake_uri),
                BATCH_IDS_KEY: MetadataValue.json(batch_ids),
            },
        )


def _build_day(
    settings: Settings, lake_duckdb: DuckDBResource, day: dt.date, wanted: list[str]
) -> tuple[dict[str, pa.Table], dict[str, int], incremental.DayState, incremental.RefreshReport]:
    """The day's tables from one listing, the newest batch per symbol it held, the state.

    Today's partition is refreshed from its previous state (what changed since); any
    other day is built from all its files (the close, a backfill, a late-data rebuild).
    Nothing is published here, so a second attempt over a fresh listing (an object
    vanished under the first) publishes only tables of one consistent snapshot."""
    fs = lake.s3_filesystem(settings)
    previous = incremental.load_state(settings, fs, day) if day >= today_utc() else None
    files = lake.list_lake_files(settings, [day], filesystem=fs)
    con = lake_duckdb.connect()
    try:
        state, report = incremental.refresh(con, settings, fs, files, previous)
        tables = incremental.published_tables(con, state, dt.datetime.now(dt.UTC))
    finally:
        con.close()
    chosen = {name: tables[name] for name in wanted}
    return chosen, lake.batch_ids_by_symbol(files), state, report


def daily_summaries_asset(partitions: PartitionsDefinition) -> AssetsDefinition:
    """The multi-asset over the code location's daily partitions (built at load)."""
    return multi_asset(
        specs=[
            spec.replace_attributes(group_name="summaries", kinds={"duckdb", "deltalake"})
            for spec in SUMMARY_SPECS
        ],
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        can_subset=True,
    )(daily_summaries)
