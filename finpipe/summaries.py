"""The summary tables: where they live, their schemas, how a day is published and read.

Each summary is a Delta Lake table, ``s3://<bucket>/<summaries_prefix>/<name>``,
partitioned by ``trade_date``. Publishing a day replaces that day's partition in one
commit (``write_deltalake(mode="overwrite", predicate="trade_date = 'YYYY-MM-DD'")``): the
new file is written first, then one log entry removes the day's old files and adds it. A
reader sees the table before or after that commit, never a mix and never a missing day;
the other days keep their files; no reader waits for a writer. Publishing the same rows
again is idempotent (a new version, the same rows).

Every publish records, as commit metadata, the lake state the day was built from
(:class:`LakeState`) and the day, so the table's history says what each version holds.
Timestamps are microseconds, UTC: Delta has no millisecond type.

Before Delta a summary was one Parquet object per day,
``<name>/trade_date=YYYY-MM-DD/data.parquet``, which no Delta reader sees:
:func:`pre_delta_days` finds such objects and :func:`pre_delta_message` says what to do.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from finpipe import contracts
from finpipe.delta_storage import S3Access, StorageOptions, storage_options
from finpipe.lake import LakeTable, object_store, s3_table
from finpipe.settings import Settings

TS = pa.timestamp("us", tz="UTC")
PARTITION_COLUMN = "trade_date"

OHLCV_1M = "ohlcv_1m"
DAILY_SYMBOL_STATS = "daily_symbol_stats"
LATEST_PRICES = "latest_prices"
NAMES = (OHLCV_1M, DAILY_SYMBOL_STATS, LATEST_PRICES)
"""Every summary table (each one a Dagster asset key too)."""

SCHEMAS: dict[str, pa.Schema] = {
    OHLCV_1M: pa.schema(
        [
            ("trade_date", pa.date32()),
            ("symbol", pa.string()),
            ("minute", TS),
            ("open", pa.float64()),
            ("high", pa.float64()),
            ("low", pa.float64()),
            ("close", pa.float64()),
            ("volume", pa.float64()),
            ("trade_value", pa.float64()),
            ("trade_count", pa.int64()),
            ("vwap", pa.float64()),
        ]
    ),
    DAILY_SYMBOL_STATS: pa.schema(
        [
            ("trade_date", pa.date32()),
            ("symbol", pa.string()),
            ("open", pa.float64()),
            ("high", pa.float64()),
            ("low", pa.float64()),
            ("close", pa.float64()),
            ("volume", pa.float64()),
            ("traded_value", pa.float64()),
            ("trade_count", pa.int64()),
            ("vwap", pa.float64()),
            ("high_low_range", pa.float64()),
            ("realized_volatility", pa.float64()),
            ("first_trade_ts", TS),
            ("last_trade_ts", TS),
        ]
    ),
    LATEST_PRICES: pa.schema(
        [
            ("trade_date", pa.date32()),
            ("symbol", pa.string()),
            ("price", pa.float64()),
            ("volume", pa.float64()),
            ("trade_ts", TS),
            ("computed_ts", TS),
        ]
    ),
}

SPECS: dict[str, contracts.TableSpec] = {
    name: contracts.TableSpec(
        name=name,
        schema=schema,
        partition_by=(PARTITION_COLUMN,),
        stats_columns=tuple(schema.names),  # delta-rs's default: the first 32 columns
        properties=contracts.TABLE_PROPERTIES,
    )
    for name, schema in SCHEMAS.items()
}
"""Each summary as a table of the lake: created with every finpipe table's properties, so
the maintenance job's vacuum and log cleanup keep it as small as the lake's tables."""

# Commit metadata of a publish (top-level keys of the commit in ``DeltaTable.history()``).
LAKE_KEY = "finpipe.lake"
LAKE_VERSION_KEY = "finpipe.lake_version"
LAKE_ROWS_KEY = "finpipe.lake_rows"
TRADE_DATE_KEY = "finpipe.trade_date"

PRE_DELTA_OBJECT = "data.parquet"
"""The name of a day's object in the layout before Delta."""


@dataclass(frozen=True)
class LakeState:
    """What a published day was built from: the lake, its table version, and how many of
    the day's rows it held then."""

    lake_uri: str
    lake_version: int | None = None
    lake_rows: int | None = None

    def commit_metadata(self, day: dt.date) -> dict[str, str]:
        return {
            LAKE_KEY: self.lake_uri,
            LAKE_VERSION_KEY: json.dumps(self.lake_version),
            LAKE_ROWS_KEY: json.dumps(self.lake_rows),
            TRADE_DATE_KEY: day.isoformat(),
        }


@dataclass(frozen=True)
class Published:
    version: int
    """The table version the publish committed."""
    pre_delta_days: tuple[dt.date, ...] = ()
    """When this publish created the table: the days of the pre-Delta layout beside it."""


def table_uri(settings: Settings, name: str) -> str:
    return f"s3://{settings.s3_bucket}/{settings.summaries_prefix}/{name}"


def summary_table(settings: Settings, name: str, access: S3Access | None = None) -> LakeTable:
    """Summary ``name`` as a lake table (what maintenance opens, vacuums and sweeps)."""
    return s3_table(settings, f"{settings.summaries_prefix}/{name}", SPECS[name], access)


def open_table(
    settings: Settings,
    name: str,
    *,
    version: int | None = None,
    options: StorageOptions | None = None,
) -> DeltaTable | None:
    """Summary ``name`` at its newest version (or ``version``); None before its first
    publish. An unreachable store raises (``OSError``)."""
    try:
        return DeltaTable(
            table_uri(settings, name),
            version=version,
            storage_options=options if options is not None else storage_options(settings),
        )
    except TableNotFoundError:
        return None


def publish(
    settings: Settings,
    name: str,
    day: dt.date,
    table: pa.Table,
    *,
    source: LakeState,
    access: S3Access | None = None,
) -> Published:
    """Replace ``day`` of summary ``name`` with the rows of ``table`` in one commit
    (reaching the store with ``access``, default: the settings' endpoint and keys).

    Publishes of other days at the same time are retried by delta-rs and all land; of the
    same day one wins and the other raises ``CommitFailedError`` (it is not retried here:
    it could put older rows over newer ones)."""
    schema = SCHEMAS[name]
    rows = table.select(schema.names).cast(schema)
    other_days = pc.sum(pc.not_equal(rows[PARTITION_COLUMN], pa.scalar(day))).as_py() or 0
    if other_days:
        raise ValueError(f"{other_days} rows of the {name} of {day} belong to another day")
    options = storage_options(access or settings)
    delta, pre_delta = _table_to_write(settings, name, options, access)
    write_deltalake(
        delta,
        rows,
        mode="overwrite",
        predicate=f"{PARTITION_COLUMN} = '{day.isoformat()}'",
        commit_properties=CommitProperties(custom_metadata=source.commit_metadata(day)),
    )
    return Published(delta.version(), pre_delta)


def _table_to_write(
    settings: Settings, name: str, options: StorageOptions, access: S3Access | None
) -> tuple[DeltaTable, tuple[dt.date, ...]]:
    """The table, created (empty, partitioned) when this is its first publish."""
    found = open_table(settings, name, options=options)
    if found is not None:
        return found, ()
    try:
        created = LakeTable(table_uri(settings, name), SPECS[name], options).ensure()
    except CommitFailedError:  # another writer created it a moment ago
        created = DeltaTable(table_uri(settings, name), storage_options=options)
    return created, tuple(pre_delta_days(settings, name, access=access))


def read(
    settings: Settings,
    name: str,
    days: Iterable[dt.date] | None = None,
    *,
    version: int | None = None,
) -> pa.Table:
    """The rows of ``days`` (every day when None) of summary ``name`` at its newest version
    (or ``version``), in day order; empty before the first publish. Raises
    :class:`PreDeltaLayout` when there is no table but objects of the old layout."""
    delta = open_table(settings, name, version=version)
    if delta is None:
        old = pre_delta_days(settings, name)
        if old:
            raise PreDeltaLayout(pre_delta_message(settings, name, old))
        return SCHEMAS[name].empty_table()
    return day_rows(delta, name, days)


def day_rows(delta: DeltaTable, name: str, days: Iterable[dt.date] | None = None) -> pa.Table:
    """The rows of ``days`` (every day when None) in the snapshot ``delta``, in day order."""
    schema = SCHEMAS[name]
    wanted = None if days is None else sorted(set(days))
    if wanted == []:
        return schema.empty_table()
    filters = None if wanted is None else [(PARTITION_COLUMN, "in", wanted)]
    rows = delta.to_pyarrow_table(filters=filters).select(schema.names).cast(schema)
    return rows.take(pc.sort_indices(rows, [(PARTITION_COLUMN, "ascending")]))


def published_days(delta: DeltaTable) -> list[dt.date]:
    """The days the snapshot ``delta`` holds rows of (its partitions), oldest first."""
    return sorted(dt.date.fromisoformat(p[PARTITION_COLUMN]) for p in delta.partitions())


def files_by_day(delta: DeltaTable) -> dict[dt.date, frozenset[str]]:
    """The data files of each day in the snapshot ``delta``: a day whose set is unchanged
    between two versions holds the same rows."""
    adds = pa.table(delta.get_add_actions(flatten=True))
    found: dict[dt.date, set[str]] = {}
    for path, day in zip(
        adds["path"].to_pylist(), adds[f"partition.{PARTITION_COLUMN}"].to_pylist(), strict=True
    ):
        found.setdefault(day, set()).add(path)
    return {day: frozenset(paths) for day, paths in found.items()}


def publish_times(delta: DeltaTable, commits: int) -> dict[dt.date, dt.datetime]:
    """Per day, the commit time of its newest publish among the ``commits`` newest commits."""
    times: dict[dt.date, dt.datetime] = {}
    for commit in delta.history(limit=commits):
        day = commit.get(TRADE_DATE_KEY)
        if isinstance(day, str) and "timestamp" in commit:  # history() is newest first
            at = dt.datetime.fromtimestamp(commit["timestamp"] / 1000, dt.UTC)
            times.setdefault(dt.date.fromisoformat(day), at)
    return times


# --- the layout before Delta ------------------------------------------------------------


class PreDeltaLayout(RuntimeError):
    """A summary's folder holds objects of the pre-Delta layout and no Delta table."""


def pre_delta_days(
    settings: Settings, name: str, *, access: S3Access | None = None
) -> list[dt.date]:
    """Days of summary ``name`` that have an object of the pre-Delta layout (one listing
    of the summary's folder, with obstore)."""
    import obstore

    base = f"{settings.summaries_prefix}/{name}/"
    store = object_store(access or settings, bucket=settings.s3_bucket)
    days = []
    for batch in obstore.list(store, prefix=base):
        for meta in batch:
            folder, _, object_name = meta["path"].removeprefix(base).rpartition("/")
            if object_name != PRE_DELTA_OBJECT or not folder.startswith(f"{PARTITION_COLUMN}="):
                continue
            try:
                days.append(dt.date.fromisoformat(folder.removeprefix(f"{PARTITION_COLUMN}=")))
            except ValueError:
                continue
    return sorted(days)


def pre_delta_message(settings: Settings, name: str, days: list[dt.date]) -> str:
    return (
        f"{table_uri(settings, name)}/ holds {len(days)} day(s) of {name} in the layout "
        f"before Delta ({days[0]} .. {days[-1]}, one trade_date=…/{PRE_DELTA_OBJECT} "
        "each), which no Delta reader sees. Rebuild them from the lake with a backfill of "
        f"summaries_job over {days[0]} .. {days[-1]}; then delete those "
        f"{PRE_DELTA_OBJECT} objects."
    )
