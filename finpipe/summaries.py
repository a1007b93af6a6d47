"""Where the DuckDB summary tables live, their schemas, and how they are published.

Each summary is a set of Parquet objects, one per daily partition:
``s3://<bucket>/<summaries_prefix>/<name>/trade_date=YYYY-MM-DD/data.parquet``.
A partition is published with a single PUT, which S3 makes atomic, so a reader (the
dashboard) sees either the previous or the new version of a day, never a half-written
one, and never waits for a writer. Rewriting a partition replaces it: idempotent.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from finpipe.lake import s3_filesystem
from finpipe.settings import Settings

TS = pa.timestamp("ms", tz="UTC")

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


def partition_key(settings: Settings, name: str, day: dt.date) -> str:
    """bucket/key of one summary partition, as pyarrow.fs names it."""
    return (
        f"{settings.s3_bucket}/{settings.summaries_prefix}/{name}/"
        f"trade_date={day.isoformat()}/data.parquet"
    )


def publish(
    settings: Settings,
    name: str,
    day: dt.date,
    table: pa.Table,
    *,
    filesystem: pafs.FileSystem | None = None,
) -> str:
    """Write one partition atomically (one PUT of a fully built file); returns its key."""
    table = table.select(SCHEMAS[name].names).cast(SCHEMAS[name])
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    key = partition_key(settings, name, day)
    fs = filesystem or s3_filesystem(settings)
    with fs.open_output_stream(key) as out:
        out.write(buffer.getvalue())
    return key


def summary_dataset(
    settings: Settings,
    name: str,
    dates: Iterable[dt.date] | None = None,
    *,
    filesystem: pafs.FileSystem | None = None,
) -> ds.Dataset:
    """The published partitions of one summary (all of them when ``dates`` is None)."""
    fs = filesystem or s3_filesystem(settings)
    if dates is None:
        selector = pafs.FileSelector(
            f"{settings.s3_bucket}/{settings.summaries_prefix}/{name}",
            recursive=True,
            allow_not_found=True,
        )
        paths = sorted(
            info.path
            for info in fs.get_file_info(selector)
            if info.type == pafs.FileType.File and info.path.endswith("/data.parquet")
        )
    else:
        keys = [partition_key(settings, name, d) for d in sorted(set(dates))]
        paths = [i.path for i in fs.get_file_info(keys) if i.type == pafs.FileType.File]
    return ds.dataset(paths, schema=SCHEMAS[name], format="parquet", filesystem=fs)
