"""The ``foreachBatch`` sink: one micro-batch -> the lake's objects, named by batch id.

Runs on the driver but only orchestrates: the rows are shuffled by
``(trade_date, symbol)`` and written by the executors (``spark.lake_files``); the driver
collects one small report row per object. See ``spark.lake_files`` for why this makes the
table exactly-once for readers that glob it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
from pyspark.sql import DataFrame

from finpipe.lake import s3_filesystem
from finpipe.settings import Settings
from spark.lake_files import (
    LAKE_KIND,
    REJECTS_KIND,
    REPORT_DDL,
    LakeLocation,
    write_batch_rows,
)


@dataclass(frozen=True)
class BatchWrite:
    """What one executed micro-batch wrote."""

    batch_id: int
    rows: int
    rejects: int
    files_written: int
    max_trade_ts_ms: int | None
    processed_ts_ms: int
    write_ms: int


_FILESYSTEMS: dict[tuple[str, str], pafs.S3FileSystem] = {}


def _filesystem(settings: Settings) -> pafs.S3FileSystem:
    """One S3 client per Python worker (workers are reused across tasks and batches)."""
    key = (settings.s3_endpoint_url, settings.s3_credentials[0])
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = s3_filesystem(settings)
    return _FILESYSTEMS[key]


def _task_writer(settings: Settings, location: LakeLocation, batch_id: int, processed_ts_ms: int):  # type: ignore[no-untyped-def]
    """The function ``mapInArrow`` ships to the executors (a closure over plain values)."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        report = write_batch_rows(
            batches,
            location=location,
            batch_id=batch_id,
            processed_ts_ms=processed_ts_ms,
            filesystem=_filesystem(settings),
            retry_seconds=settings.s3_write_retry_seconds,
            threads=settings.spark_write_threads,
        )
        yield from report.to_batches()

    return write


class LakeBatchSink:
    """Callable for ``DataStreamWriter.foreachBatch``; remembers what each batch wrote."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._location = LakeLocation(settings.s3_bucket, settings.lake_prefix)
        self._lock = threading.Lock()
        self._written: dict[int, BatchWrite] = {}

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        processed_ts_ms = int(time.time() * 1000)
        writer = _task_writer(self._settings, self._location, batch_id, processed_ts_ms)
        reports = batch.repartition("trade_date", "symbol").mapInArrow(writer, REPORT_DDL).collect()
        data = [r for r in reports if r["kind"] == LAKE_KIND]
        max_ts = [r["max_trade_ts_ms"] for r in data if r["max_trade_ts_ms"] is not None]
        written = BatchWrite(
            batch_id=batch_id,
            rows=sum(r["rows"] for r in data),
            rejects=sum(r["rows"] for r in reports if r["kind"] == REJECTS_KIND),
            files_written=len(reports),
            max_trade_ts_ms=max(max_ts) if max_ts else None,
            processed_ts_ms=processed_ts_ms,
            write_ms=int((time.monotonic() - started) * 1000),
        )
        with self._lock:
            self._written[batch_id] = written

    def pop(self, batch_id: int) -> BatchWrite | None:
        with self._lock:
            return self._written.pop(batch_id, None)
