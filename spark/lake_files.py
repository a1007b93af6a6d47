"""Turn one micro-batch's rows into data files of the lake's Delta tables: runs on executors.

Why the executors write (and not the driver via ``toArrow``): the batch is shuffled by
``(trade_date, symbol)`` so each partition of the table is owned by exactly one task, and
that task writes its file straight to the object store with pyarrow. Nothing but one
small report row per file travels back to the driver (its path, size, partition values
and column bounds: what the log's ``add`` action needs), so the driver's memory does not
bound the batch size and the same code scales out on a cluster.

Why this is exactly-once: a written file is not part of the table until the driver
commits the batch (``spark.sink``), once, with the application transaction
``(SPARK_APP_ID, batch id)``. A file's name is new on every write (the batch id and a
random part), so a batch replayed after a crash writes new files; if the first run had
committed, the replay commits nothing and its files are never named by the log, so no
reader sees them (an orphan sweep removes them later).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from finpipe import contracts, delta_commit
from spark.store_retry import with_retries

LAKE_SORT_KEYS = [("kafka_partition", "ascending"), ("kafka_offset", "ascending")]
PARQUET_COMPRESSION = "zstd"

LAKE_KIND = "lake"
REJECTS_KIND = "rejects"
REPORT_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string()),
        pa.field("path", pa.string()),  # relative to its table
        pa.field("size", pa.int64()),
        pa.field("partition", pa.string()),  # JSON of the partition values
        pa.field("stats", pa.string()),  # the log's stats JSON
        pa.field("rows", pa.int64()),
        pa.field("max_trade_ts_ms", pa.int64()),
    ]
)
"""One row per written file, returned to the driver."""
REPORT_DDL = (
    "kind string, path string, size long, partition string, stats string, rows long, "
    "max_trade_ts_ms long"
)


@dataclass(frozen=True)
class LakeLocation:
    """Where the tables' files go (``bucket/prefix`` of each table, as pyarrow.fs names
    it); picklable, so it travels to the executors."""

    trades_root: str
    rejects_root: str


def _timestamp(values: pa.ChunkedArray | pa.Array) -> pa.Array | pa.ChunkedArray:
    """Epoch milliseconds as the lake's timestamp type."""
    return pc.cast(values, pa.int64()).cast(pa.timestamp("ms", tz="UTC")).cast(contracts.LAKE_TS)


def _constant_ts(ms: int, count: int) -> pa.Array:
    return _timestamp(pa.array([ms] * count, pa.int64()))


def lake_table(rows: pa.Table, processed_ts_ms: int) -> pa.Table:
    """Valid rows (columns as prepared by ``spark.transform``) in the lake's exact schema."""
    columns = {
        "symbol": rows["symbol"],
        "price": rows["price"],
        "volume": rows["volume"],
        "trade_value": rows["trade_value"],
        "trade_ts": _timestamp(rows["trade_ts_ms"]),
        "ingest_ts": _timestamp(rows["ingest_ts_ms"]),
        "processed_ts": _constant_ts(processed_ts_ms, rows.num_rows),
        "conditions": rows["conditions"],
        "kafka_partition": rows["kafka_partition"],
        "kafka_offset": rows["kafka_offset"],
        "trade_date": rows["trade_date"],
    }
    arrays = [pc.cast(columns[field.name], field.type) for field in contracts.LAKE_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=contracts.LAKE_SCHEMA)


def rejects_table(rows: pa.Table, processed_ts_ms: int) -> pa.Table:
    processed_day = dt.datetime.fromtimestamp(processed_ts_ms / 1000, dt.UTC).date()
    columns = {
        "kafka_partition": rows["kafka_partition"],
        "kafka_offset": rows["kafka_offset"],
        "kafka_timestamp": rows["kafka_timestamp"],
        "key": rows["key"],
        "value": rows["value"],
        "reason": rows["reject_reason"],
        "processed_ts": _constant_ts(processed_ts_ms, rows.num_rows),
        "processed_date": pa.array([processed_day] * rows.num_rows, pa.date32()),
    }
    arrays = []
    for field in contracts.REJECTS_SCHEMA:
        column = columns[field.name]
        if pa.types.is_timestamp(field.type) and not pa.types.is_timestamp(column.type):
            column = _timestamp(column)
        arrays.append(pc.cast(column, field.type, safe=False))
    table = pa.Table.from_arrays(arrays, schema=contracts.REJECTS_SCHEMA)
    return table.sort_by(LAKE_SORT_KEYS)


def partition_groups(table: pa.Table) -> Iterator[tuple[dt.date, str, pa.Table]]:
    """The table split by (trade_date, symbol), each group sorted by Kafka coordinates
    (so a file's rows do not depend on the order Spark handed them over)."""
    keys = table.select(["trade_date", "symbol"]).group_by(["trade_date", "symbol"]).aggregate([])
    for trade_date, symbol in zip(
        keys["trade_date"].to_pylist(), keys["symbol"].to_pylist(), strict=True
    ):
        mask = pc.and_(
            pc.equal(table["trade_date"], pa.scalar(trade_date, pa.date32())),
            pc.equal(table["symbol"], pa.scalar(symbol, pa.string())),
        )
        yield trade_date, symbol, table.filter(mask).sort_by(LAKE_SORT_KEYS)


def write_object(
    table: pa.Table, path: str, filesystem: pafs.FileSystem, retry_seconds: float = 0.0
) -> int:
    """One file, written whole (transient store failures retried, ``spark.store_retry``);
    returns its size in bytes, which the log records."""

    def write() -> None:
        if filesystem.type_name == "local":  # object stores need no folders (S3: markers)
            filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(table, path, filesystem=filesystem, compression=PARQUET_COMPRESSION)

    with_retries(write, what=path, budget_seconds=retry_seconds)
    size = filesystem.get_file_info(path).size
    assert size is not None, path
    return size


@functools.cache
def _pool(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    """One pool per Python worker (workers are reused across tasks and batches, and run
    one task at a time)."""
    return concurrent.futures.ThreadPoolExecutor(threads, "lake-writer")


def _written(
    kind: str,
    spec: contracts.TableSpec,
    root: str,
    rows: pa.Table,
    partition: dict[str, str],
    batch_id: int,
    filesystem: pafs.FileSystem,
    retry_seconds: float,
) -> dict[str, object]:
    """Write ``rows`` (partition columns included) as a new file of the table at ``root``;
    the report row the driver commits it from."""
    relative = delta_commit.data_file_path(partition, batch_id)
    size = write_object(
        rows.drop_columns(list(spec.partition_by)),
        f"{root}/{relative}",
        filesystem,
        retry_seconds,
    )
    max_ts = (
        pc.max(rows["trade_ts"]).cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).as_py()
        if "trade_ts" in rows.column_names
        else None
    )
    return {
        "kind": kind,
        "path": relative,
        "size": size,
        "partition": json.dumps(partition),
        "stats": delta_commit.file_stats(rows, spec.stats_columns),
        "rows": rows.num_rows,
        "max_trade_ts_ms": max_ts,
    }


def write_batch_rows(
    batches: Iterable[pa.RecordBatch],
    *,
    location: LakeLocation,
    batch_id: int,
    processed_ts_ms: int,
    filesystem: pafs.FileSystem,
    retry_seconds: float = 0.0,
    threads: int = 1,
) -> pa.Table:
    """Write the rows of one Spark task; returns one ``REPORT_SCHEMA`` row per file.

    ``threads`` files are written at once (Parquet encoding and the PUT release the GIL).
    """
    batches = list(batches)
    if not batches or sum(b.num_rows for b in batches) == 0:
        return REPORT_SCHEMA.empty_table()
    rows = pa.Table.from_batches(batches)
    reports: list[dict[str, object]] = []
    valid = pc.fill_null(rows["valid"], False)
    good = rows.filter(valid)
    if good.num_rows:
        table = lake_table(good, processed_ts_ms)

        def write(group: tuple[dt.date, str, pa.Table]) -> dict[str, object]:
            trade_date, symbol, part = group
            values = {"trade_date": trade_date.isoformat(), "symbol": symbol}
            return _written(
                LAKE_KIND,
                contracts.LAKE_TABLE,
                location.trades_root,
                part,
                values,
                batch_id,
                filesystem,
                retry_seconds,
            )

        if threads > 1:
            futures = [_pool(threads).submit(write, g) for g in partition_groups(table)]
            # Every write ends before the first failure is raised: a failed task never
            # leaves a write of its own running behind it.
            concurrent.futures.wait(futures)
            reports.extend(f.result() for f in futures)
        else:
            reports.extend(write(g) for g in partition_groups(table))
    bad = rows.filter(pc.invert(valid))
    if bad.num_rows:
        # Rejects have no partition values in the shuffle, so all of a batch's rejects
        # are in one task: one file per batch.
        table = rejects_table(bad, processed_ts_ms)
        day = table["processed_date"][0].as_py().isoformat()
        reports.append(
            _written(
                REJECTS_KIND,
                contracts.REJECTS_TABLE,
                location.rejects_root,
                table,
                {"processed_date": day},
                batch_id,
                filesystem,
                retry_seconds,
            )
        )
    return pa.Table.from_pylist(reports, schema=REPORT_SCHEMA)
