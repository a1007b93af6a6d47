"""The ``foreachBatch`` sink: one micro-batch -> one commit to each Delta table it touches.

Runs on the driver but only orchestrates: the rows are shuffled by
``(trade_date, symbol)`` and written by the executors (``spark.lake_files``); the driver
collects one small report row per file and commits them (``finpipe.delta_commit``):
the rejects first, then the trades, each with the application transaction
``(SPARK_APP_ID, batch id)``. A batch Spark replays after a crash is checked against
each table's recorded transaction, so what a table already holds is never added again,
and a crash between the two commits completes the second one on replay.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.transaction import AddAction
from pyspark.sql import DataFrame

from finpipe import contracts, delta_commit
from finpipe.lake import LakeTable, rejects_table, s3_filesystem, trades_table
from finpipe.settings import Settings
from spark.lake_files import (
    LAKE_KIND,
    REJECTS_KIND,
    REPORT_DDL,
    LakeLocation,
    write_batch_rows,
)
from spark.store_retry import with_retries

T = TypeVar("T")

MAX_UNCOMMITTED_SECONDS = 3600.0
"""A batch whose files were written longer ago than this is not committed: the query fails
and Spark replays it with new files. So a file no commit names is either younger than an
hour or never committed, and the orphan sweep's week of retention never deletes a file
the writer is about to commit."""


class StaleWrite(RuntimeError):
    """A batch's files are too old to commit (see ``MAX_UNCOMMITTED_SECONDS``)."""


@dataclass(frozen=True)
class BatchWrite:
    """What one executed micro-batch wrote and committed."""

    batch_id: int
    rows: int
    rejects: int
    files_written: int
    max_trade_ts_ms: int | None
    processed_ts_ms: int
    write_ms: int
    commit_ms: int = 0
    table_version: int | None = None
    """The trades table's version after the batch (None: not known)."""
    replayed: bool = False
    """The tables already held the batch (a replay after a crash): nothing was added."""


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


def _root(table: LakeTable, settings: Settings) -> str:
    """``bucket/key`` of a table, as pyarrow.fs names it."""
    return f"{settings.s3_bucket}/{table.key_prefix}"


def add_actions(reports: list) -> list[AddAction]:
    """The log's ``add`` actions of the files the executors reported (``REPORT_SCHEMA``)."""
    return [
        AddAction(
            r["path"],
            r["size"],
            json.loads(r["partition"]),
            int(time.time() * 1000),
            True,
            r["stats"],
        )
        for r in reports
    ]


def committed_batch(table: DeltaTable) -> int:
    """The newest batch the streaming query committed to ``table`` (-1: none)."""
    done = delta_commit.committed_version(table, contracts.SPARK_APP_ID)
    return -1 if done is None else done


class LakeBatchSink:
    """Callable for ``DataStreamWriter.foreachBatch``; remembers what each batch wrote."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._trades = trades_table(settings)
        self._rejects = rejects_table(settings)
        self._location = LakeLocation(_root(self._trades, settings), _root(self._rejects, settings))
        self._lock = threading.Lock()
        self._written: dict[int, BatchWrite] = {}
        self._tables: dict[str, DeltaTable] = {}

    def _table(self, table: LakeTable) -> DeltaTable:
        """The table at its newest version (opened once, then brought up to date: a
        maintenance job commits to it too)."""
        cached = self._tables.get(table.uri)
        if cached is None:
            cached = self._tables[table.uri] = table.ensure()
        else:
            cached.update_incremental()
        return cached

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        processed_ts_ms = int(time.time() * 1000)
        trades = self._retried(lambda: self._table(self._trades), "open the trades table")
        if committed_batch(trades) >= batch_id:
            # The trades are committed last, so the batch is wholly in: Spark replays a
            # batch whose end it did not record. Nothing is written again.
            self._remember(
                BatchWrite(batch_id, 0, 0, 0, None, processed_ts_ms, 0, 0, None, replayed=True)
            )
            return
        writer = _task_writer(self._settings, self._location, batch_id, processed_ts_ms)
        reports = batch.repartition("trade_date", "symbol").mapInArrow(writer, REPORT_DDL).collect()
        written_ms = int((time.monotonic() - started) * 1000)
        data = [r for r in reports if r["kind"] == LAKE_KIND]
        bad = [r for r in reports if r["kind"] == REJECTS_KIND]
        # Rejects first: a crash between the commits leaves the trades to the replay, whose
        # rejects are then already in (and skipped).
        if bad:
            self._retried(
                lambda: self._commit(
                    self._table(self._rejects), contracts.REJECTS_TABLE, bad, batch_id
                ),
                f"commit the rejects of batch {batch_id}",
            )
        if time.monotonic() - started > MAX_UNCOMMITTED_SECONDS:
            raise StaleWrite(
                f"batch {batch_id} wrote its files {written_ms / 1000:.0f} s ago: too old to "
                "commit; the replay writes new ones"
            )
        version = None
        if data:
            version = self._retried(
                lambda: self._commit(trades, contracts.LAKE_TABLE, data, batch_id),
                f"commit batch {batch_id}",
            )
        max_ts = [r["max_trade_ts_ms"] for r in data if r["max_trade_ts_ms"] is not None]
        self._remember(
            BatchWrite(
                batch_id=batch_id,
                rows=sum(r["rows"] for r in data),
                rejects=sum(r["rows"] for r in bad),
                files_written=len(reports),
                max_trade_ts_ms=max(max_ts) if max_ts else None,
                processed_ts_ms=processed_ts_ms,
                write_ms=written_ms,
                commit_ms=int((time.monotonic() - started) * 1000) - written_ms,
                table_version=version if version is not None else trades.version(),
            )
        )

    def _retried(self, action: Callable[[], T], what: str) -> T:
        """The store may be away for a while (a restart, a failover): the batch waits for
        it, within S3_WRITE_RETRY_SECONDS, rather than failing the query."""
        return with_retries(action, what=what, budget_seconds=self._settings.s3_write_retry_seconds)

    @staticmethod
    def _commit(
        table: DeltaTable, spec: contracts.TableSpec, reports: list, batch_id: int
    ) -> int | None:
        return delta_commit.commit_files(
            table,
            add_actions(reports),
            app_id=contracts.SPARK_APP_ID,
            batch_id=batch_id,
            partition_by=spec.partition_by,
            schema=spec.schema,
        )

    def _remember(self, written: BatchWrite) -> None:
        with self._lock:
            self._written[written.batch_id] = written

    def pop(self, batch_id: int) -> BatchWrite | None:
        with self._lock:
            return self._written.pop(batch_id, None)
