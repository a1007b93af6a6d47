"""Turn one micro-batch's rows into the lake's objects: pure pyarrow, runs on executors.

Why the executors write (and not the driver via ``toArrow``): the batch is shuffled by
``(trade_date, symbol)`` so each partition of the lake is owned by exactly one task, and
that task writes its objects straight to S3 with pyarrow. Nothing but a few counters per
object travels back to the driver, so the driver's memory does not bound the batch size
and the same code scales out on a cluster (every executor talks to S3 itself).

Why this is exactly-once for readers: the object names derive only from the partition
values and the batch id (``contracts.batch_file_name``), the rows in an object are sorted
by their Kafka coordinates, and Spark fixes a batch's offsets in its checkpoint before
running it. A batch replayed after a crash therefore rewrites the very same objects with
the very same rows (only ``processed_ts`` is the replay's time), and each object appears
atomically (a single S3 PUT, or a multipart upload that becomes visible on completion).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from finpipe import contracts
from spark.store_retry import with_retries

LAKE_SORT_KEYS = [("kafka_partition", "ascending"), ("kafka_offset", "ascending")]
PARQUET_COMPRESSION = "zstd"

LAKE_KIND = "lake"
REJECTS_KIND = "rejects"
REPORT_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string()),
        pa.field("path", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("max_trade_ts_ms", pa.int64()),
    ]
)
"""One row per written object, returned to the driver."""
REPORT_DDL = "kind string, path string, rows long, max_trade_ts_ms long"


@dataclass(frozen=True)
class LakeLocation:
    """Where the objects go; picklable, so it travels to the executors."""

    bucket: str
    prefix: str

    def data_key(self, trade_date: dt.date, symbol: str, batch_id: int) -> str:
        folder = contracts.partition_dir(trade_date.isoformat(), symbol)
        return f"{self.bucket}/{self.prefix}/{folder}/{contracts.batch_file_name(batch_id)}"

    def rejects_key(self, batch_id: int) -> str:
        name = contracts.batch_file_name(batch_id)
        return f"{self.bucket}/{self.prefix}/{contracts.LAKE_REJECTS_DIR}/{name}"


def _timestamp_ms(values: pa.ChunkedArray | pa.Array) -> pa.Array | pa.ChunkedArray:
    return pc.cast(values, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))


def lake_table(rows: pa.Table, processed_ts_ms: int) -> pa.Table:
    """Valid rows (columns as prepared by ``spark.transform``) in the lake's exact schema."""
    columns = {
        "symbol": rows["symbol"],
        "price": rows["price"],
        "volume": rows["volume"],
        "trade_value": rows["trade_value"],
        "trade_ts": _timestamp_ms(rows["trade_ts_ms"]),
        "ingest_ts": _timestamp_ms(rows["ingest_ts_ms"]),
        "processed_ts": pa.array([processed_ts_ms] * rows.num_rows, pa.int64()).cast(
            pa.timestamp("ms", tz="UTC")
        ),
        "conditions": rows["conditions"],
        "kafka_partition": rows["kafka_partition"],
        "kafka_offset": rows["kafka_offset"],
        "trade_date": rows["trade_date"],
    }
    arrays = [pc.cast(columns[field.name], field.type) for field in contracts.LAKE_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=contracts.LAKE_SCHEMA)


def rejects_table(rows: pa.Table, processed_ts_ms: int) -> pa.Table:
    columns = {
        "kafka_partition": rows["kafka_partition"],
        "kafka_offset": rows["kafka_offset"],
        "kafka_timestamp": rows["kafka_timestamp"],
        "key": rows["key"],
        "value": rows["value"],
        "reason": rows["reject_reason"],
        "processed_ts": pa.array([processed_ts_ms] * rows.num_rows, pa.int64()),
    }
    arrays = []
    for field in contracts.REJECTS_SCHEMA:
        column = columns[field.name]
        if pa.types.is_timestamp(field.type) and not pa.types.is_timestamp(column.type):
            column = _timestamp_ms(column)
        arrays.append(pc.cast(column, field.type, safe=False))
    table = pa.Table.from_arrays(arrays, schema=contracts.REJECTS_SCHEMA)
    return table.sort_by(LAKE_SORT_KEYS)


def partition_groups(table: pa.Table) -> Iterator[tuple[dt.date, str, pa.Table]]:
    """The table split by (trade_date, symbol), each group sorted by Kafka coordinates.

    Sorted by coordinates, so the group's content depends only on which rows it holds,
    never on the order Spark handed them over.
    """
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
) -> None:
    """One object, written whole; transient store failures retried (``spark.store_retry``)."""

    def write() -> None:
        if filesystem.type_name == "local":  # object stores need no folders (S3: markers)
            filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(table, path, filesystem=filesystem, compression=PARQUET_COMPRESSION)

    with_retries(write, what=path, budget_seconds=retry_seconds)


@functools.cache
def _pool(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    """One pool per Python worker (workers are reused across tasks and batches, and run
    one task at a time)."""
    return concurrent.futures.ThreadPoolExecutor(threads, "lake-writer")


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
    """Write the rows of one Spark task; returns one ``REPORT_SCHEMA`` row per object.

    ``threads`` objects are written at once (Parquet encoding and the PUT release the
    GIL); each object's name and rows do not depend on the order, so a replay still
    rewrites the same objects."""
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
            trade_date, symbol, rows = group
            path = location.data_key(trade_date, symbol, batch_id)
            write_object(rows, path, filesystem, retry_seconds)
            return {
                "kind": LAKE_KIND,
                "path": path,
                "rows": rows.num_rows,
                "max_trade_ts_ms": pc.max(rows["trade_ts"]).cast(pa.int64()).as_py(),
            }

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
        # Rejects have no partition values, so the shuffle puts all of a batch's rejects
        # into one task: one deterministic object per batch.
        path = location.rejects_key(batch_id)
        write_object(rejects_table(bad, processed_ts_ms), path, filesystem, retry_seconds)
        reports.append(
            {
                "kind": REJECTS_KIND,
                "path": path,
                "rows": bad.num_rows,
                "max_trade_ts_ms": None,
            }
        )
    return pa.Table.from_pylist(reports, schema=REPORT_SCHEMA)
