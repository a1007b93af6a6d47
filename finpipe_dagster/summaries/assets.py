"""Daily summary tables built with DuckDB from the lake and published as Delta tables.

One multi-asset computes the three tables of each day from one connection over that
day's lake files; a backfill of many days is one run (``BackfillPolicy.single_run``).
Publishing replaces a day's partition of each table in one commit
(``finpipe.summaries.publish``), so re-running a day is idempotent and the dashboard
never reads a half-written day.

Each materialization records, per day, the lake table version it read (``lake_version``)
and the lake rows the day's summaries hold (``lake_rows``), and the lake it read
(``lake``): durable state from which the late-data sensor tells which closed days received
rows since (``late_data.py``). The same state goes with each commit as its metadata, and
``table_version`` is the version of the summary table after the run's last publish.
"""

import datetime as dt
from collections.abc import Iterator
from typing import Any

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
from finpipe_dagster.resources import FinpipeSettings, LakeTables
from finpipe_dagster.summaries import incremental

LAKE_KEY = "lake"
LAKE_VERSION_KEY = "lake_version"
"""Metadata of each summary materialization: {day: the lake table version it read}."""
LAKE_ROWS_KEY = "lake_rows"
"""Metadata of each summary materialization: {day: the lake rows its summaries hold}."""

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
    context: AssetExecutionContext, finpipe: FinpipeSettings, lake_tables: LakeTables
) -> Iterator[MaterializeResult]:
    settings = finpipe.load()
    days = partition_days(list(context.partition_keys))
    wanted = sorted(key.to_user_string() for key in context.selected_asset_keys)
    rows_per_day: dict[str, dict[str, int]] = {name: {} for name in wanted}
    versions: dict[str, int] = {}
    lake_rows: dict[str, int] = {}
    table_versions: dict[str, int] = {}
    access = lake_tables.access()
    store = lake_tables.store()  # the state objects
    for day in days:
        tables, state, report = lake.read_reloading(
            lambda day=day: _build_day(settings, lake_tables, store, day, wanted),
            what=f"summaries of {day}",
        )
        versions[day.isoformat()], lake_rows[day.isoformat()] = state.version, state.rows
        source = summaries.LakeState(settings.lake_uri, state.version, state.rows)
        for name, table in tables.items():
            published = summaries.publish(settings, name, day, table, source=source, access=access)
            if published.pre_delta_days:
                context.log.warning(
                    summaries.pre_delta_message(settings, name, list(published.pre_delta_days))
                )
            rows_per_day[name][day.isoformat()] = table.num_rows
            table_versions[name] = published.version
            context.log.info(
                f"published {name} {day}: {table.num_rows} rows, version {published.version}"
                f" of {summaries.table_uri(settings, name)}"
            )
        # After the tables: a run stopped in between leaves the older state, whose next
        # refresh reads the same changes again.
        incremental.save_state(settings, store, day, state)
        context.log.info(f"summaries of {day}: {report}")
    for name in wanted:
        yield MaterializeResult(
            asset_key=name,
            metadata={
                "rows": MetadataValue.int(sum(rows_per_day[name].values())),
                "rows_per_day": MetadataValue.json(rows_per_day[name]),
                "location": MetadataValue.text(summaries.table_uri(settings, name)),
                "table_version": MetadataValue.int(table_versions[name]),
                LAKE_KEY: MetadataValue.text(settings.lake_uri),
                LAKE_VERSION_KEY: MetadataValue.json(versions),
                LAKE_ROWS_KEY: MetadataValue.json(lake_rows),
            },
        )


def _build_day(
    settings: Settings, lake_tables: LakeTables, store: Any, day: dt.date, wanted: list[str]
) -> tuple[dict[str, pa.Table], incremental.DayState, incremental.RefreshReport]:
    """The day's tables from one snapshot of the lake, and the day's state.

    Today's partition is refreshed from its previous state (what changed since); any
    other day is built from the snapshot (the close, a backfill, a late-data rebuild).
    Nothing is published here, so a second attempt on a fresh snapshot (a file vanished
    under the first) publishes only tables of one consistent snapshot."""
    previous = incremental.load_state(settings, store, day) if day >= today_utc() else None
    table = lake_tables.trades_table()
    snapshot = table.open()
    con = lake_tables.connect()
    try:
        state, report = incremental.refresh(con, settings, snapshot, day, previous, table=table)
        tables = incremental.published_tables(con, state, dt.datetime.now(dt.UTC))
    finally:
        con.close()
    return {name: tables[name] for name in wanted}, state, report


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
