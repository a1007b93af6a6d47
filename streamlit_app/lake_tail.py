"""The newest rows of the lake table, read incrementally for the dashboard's "last minutes".

Why not ``finpipe.lake.lake_dataset(settings, [today])`` on every refresh: by the end of a
day the streaming writer has committed thousands of files; opening a snapshot of the day
and scanning it every few seconds would make the page slower the longer the day runs.
This reader keeps state between refreshes instead:

* its first read opens a snapshot of the lake table and reads, of the tail's days, only
  the files whose recorded ``trade_ts`` bounds reach the window (the log's statistics: no
  listing, no file opened to find out);
* each refresh brings its snapshot forward (``DeltaTable.update_incremental``: the new log
  entries only) and asks the log which files the versions since added with new rows
  (``finpipe.lake_log.changes``); it reads only those, and only when they reach the window;
* it keeps the rows in memory by file and forgets a file once its rows fell out of the
  window (rows before the cutoff are trimmed as the cutoff moves);
* a compaction rewrites rows it already holds into other files (``dataChange`` false):
  the log does not call them news and the tail keeps what it read;
* when the answer cannot be trusted incrementally (a log entry is gone, a commit removed
  rows) or a file of the snapshot vanished before it was read (a vacuum), it forgets
  everything and reads once more from a fresh snapshot (``lake.read_reloading``).

A file is never added twice (a replayed micro-batch is skipped by the writer, and a file
name is unique), so caching by file never shows a row twice.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import obstore
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import structlog
from deltalake import DeltaTable

from finpipe import contracts, lake, lake_log
from finpipe.lake import s3_filesystem
from finpipe.settings import Settings

log = structlog.get_logger(__name__)

# Files with up to this many rows are read whole, one GET each (obstore: pyarrow's
# filesystem sends a HEAD before every GET), and decoded in the tail's threads; larger ones
# (compacted files) through a dataset scan that skips the row groups before the cutoff. A
# micro-batch file holds seconds of one symbol's trades: the dataset's per-file overhead
# was most of reading one (docs/benchmarks/dashboard.md).
SMALL_FILE_ROWS = 20_000
# Reads in flight at once.
READ_THREADS = 8
# More chunks than this in the tail are combined into one before the page queries it.
MAX_CHUNKS = 64
# A file's recorded maximum may be cut down to the millisecond (its true maximum is below
# bound + 1 ms): a file can hold a row of the window while bound + BOUND_SLACK > cutoff.
BOUND_SLACK = dt.timedelta(milliseconds=1)
TAIL_COLUMNS = [name for name in contracts.LAKE_SCHEMA.names if name != "trade_date"]
TAIL_SCHEMA = pa.schema([contracts.LAKE_SCHEMA.field(name) for name in TAIL_COLUMNS])
_FILE_SCHEMA = contracts.LAKE_TABLE.file_schema


@dataclass(frozen=True)
class _File:
    path: str  # relative to the table, as the store names it
    day: dt.date
    symbol: str
    rows: int | None
    newest: dt.datetime | None  # the recorded maximum trade_ts (None: not recorded)

    def reaches(self, cutoff: dt.datetime) -> bool:
        return self.newest is None or self.newest + BOUND_SLACK > cutoff


@dataclass
class ReadStats:
    """What the tail did since it was made (for tests and benchmarks): snapshots opened
    from scratch, refreshes that followed the log, and files read."""

    snapshots: int = 0
    refreshes: int = 0
    files: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)


class _Rebuild(Exception):
    """The log cannot say incrementally what changed: read from a fresh snapshot."""


class LakeTail:
    """Rows of ``processed_trades`` with ``trade_ts`` in the last ``minutes``; thread-safe."""

    def __init__(
        self,
        settings: Settings,
        minutes: int | None = None,
        *,
        filesystem: pafs.FileSystem | None = None,
        store: Any = None,
        table: lake.LakeTable | None = None,
    ) -> None:
        self.settings = settings
        self.window = dt.timedelta(minutes=minutes or settings.dashboard_tail_minutes)
        self.table = table or lake.trades_table(settings)
        self._fs = filesystem or s3_filesystem(settings)
        # rooted at the table: a file's path is its key
        self._store = store or lake.object_store(
            settings, prefix=settings.lake_prefix, timeout_seconds=5, connect_timeout_seconds=2
        )
        self.stats = ReadStats()
        self._snapshot: DeltaTable | None = None
        self._files: dict[str, _File] = {}  # the files whose rows are in the tail
        self._tables: dict[str, pa.Table] = {}  # their rows (from the cutoff on), by path
        self._oldest: dict[str, dt.datetime] = {}  # oldest trade_ts per table in memory
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(READ_THREADS, "lake-tail-read")

    @property
    def version(self) -> int | None:
        """The table version the tail holds every row of (None: not read yet)."""
        return self._snapshot.version() if self._snapshot is not None else None

    def cutoff(self, now: dt.datetime) -> dt.datetime:
        return now - self.window

    def read(self, now: dt.datetime) -> pa.Table:
        """The tail as of ``now`` (rows with ``cutoff(now) <= trade_ts``), schema TAIL_SCHEMA."""
        cutoff = self.cutoff(now)
        with self._lock:
            tables = lake.read_reloading(lambda: self._read_once(cutoff, now), what="lake tail")
        if not tables:
            return TAIL_SCHEMA.empty_table()
        table = pa.concat_tables(tables)
        # One chunk per file otherwise: DuckDB's scan of an Arrow table pays per chunk, and
        # 50 symbols' young files made the trade tape query 6x slower
        # (docs/benchmarks/dashboard.md). One copy of the tail per refresh is cheaper.
        return table.combine_chunks() if table.column(0).num_chunks > MAX_CHUNKS else table

    def _forget(self) -> None:
        self._snapshot = None
        self._files.clear()
        self._tables.clear()
        self._oldest.clear()

    def _read_once(self, cutoff: dt.datetime, now: dt.datetime) -> list[pa.Table]:
        days = contracts.trade_dates(cutoff.date(), now.date())
        try:
            try:
                new = self._new_files(days, cutoff)
            except _Rebuild as why:
                log.info("lake_tail.rebuild", reason=str(why))
                self._forget()
                new = self._new_files(days, cutoff)
            self._files.update(new)
            for path, file in list(self._files.items()):
                if file.day not in days or not file.reaches(cutoff):
                    del self._files[path]
                    self._tables.pop(path, None)
                    self._oldest.pop(path, None)
            self._load(cutoff)
            return [self._since(path, cutoff) for path in sorted(self._files)]
        except Exception:
            # Whatever failed (a file a vacuum deleted, an unreachable endpoint), the next
            # attempt starts from a fresh snapshot.
            self._forget()
            raise

    def _new_files(self, days: list[dt.date], cutoff: dt.datetime) -> dict[str, _File]:
        """The files to add to the tail: of a fresh snapshot, or added since the last."""
        if self._snapshot is None:
            snapshot = self.table.open()
            if snapshot is None:  # no table yet: nothing to show, look again next time
                return {}
            self.stats.add(snapshots=1)
            self._snapshot = snapshot
            found = [
                _File(
                    urllib.parse.unquote(f.path),  # the log's name is encoded once more
                    f.trade_date,
                    f.symbol,
                    f.rows,
                    f.max_trade_ts,
                )
                for f in lake.table_files(snapshot, days)
            ]
        else:
            since = self._snapshot.version()
            self._snapshot.update_incremental()
            version = self._snapshot.version()
            if version == since:
                return {}
            self.stats.add(refreshes=1)
            changes = lake_log.changes(self.table, since, version)
            if changes.truncated:
                raise _Rebuild(f"log entries after version {since} are gone")
            if changes.removed_data:
                raise _Rebuild(f"a commit after version {since} removed rows")
            found = [
                _File(a.path, day, a.symbol or "", a.rows, a.bound("trade_ts", "max"))
                for a in changes.adds
                if (day := a.trade_date) is not None
            ]
        wanted = set(days)
        return {f.path: f for f in found if f.day in wanted and f.reaches(cutoff)}

    def _since(self, path: str, cutoff: dt.datetime) -> pa.Table:
        """The file's rows from ``cutoff`` on, trimmed in memory for the next reads.

        Only files holding rows older than the cutoff are filtered (the cutoff only moves
        forward): filtering the whole tail on every refresh was the largest CPU cost of a
        refresh (docs/benchmarks/dashboard.md), and most files need no filtering.
        """
        oldest = self._oldest.get(path)
        if oldest is None or oldest >= cutoff:
            return self._tables[path]
        table = self._tables[path]
        since = pa.scalar(cutoff, TAIL_SCHEMA.field("trade_ts").type)
        table = table.filter(pc.greater_equal(table["trade_ts"], since))
        self._remember(path, table)
        return table

    def _remember(self, path: str, table: pa.Table) -> None:
        self._tables[path] = table
        oldest = pc.min(table["trade_ts"]).as_py() if table.num_rows else None
        if oldest is None:
            self._oldest.pop(path, None)
        else:
            self._oldest[path] = oldest

    # --- reading ------------------------------------------------------------------------

    def _load(self, cutoff: dt.datetime) -> None:
        """Read the files not yet in memory, in parallel. Rows before ``cutoff`` are
        dropped at load time for the large files and by ``_since`` for the small ones
        (safe because the cutoff only moves forward)."""
        missing = [self._files[p] for p in sorted(self._files) if p not in self._tables]
        if not missing:
            return
        small = [f for f in missing if f.rows is not None and f.rows <= SMALL_FILE_ROWS]
        for file, table in self._pool.map(lambda f: (f, self._read_small(f)), small):
            self._remember(file.path, table)
        large = [f for f in missing if f.rows is None or f.rows > SMALL_FILE_ROWS]
        if large:
            self._read_large(large, pa.scalar(cutoff, TAIL_SCHEMA.field("trade_ts").type))
        self.stats.add(files=len(missing))
        log.debug("lake_tail.loaded", files=len(missing), small=len(small))

    def _read_small(self, file: _File) -> pa.Table:
        """One GET (obstore) and a decode; rows before the cutoff are dropped by ``_since``,
        which filters only files older than the cutoff (most hold only newer rows)."""
        data = obstore.get(self._store, file.path).bytes()
        parquet = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
        columns = [c for c in TAIL_COLUMNS if c in _FILE_SCHEMA.names]
        return _with_symbol(parquet.read(columns=columns, use_threads=False), file.symbol)

    def _read_large(self, files: list[_File], since: pa.Scalar) -> None:
        root = f"{self.settings.s3_bucket}/{self.settings.lake_prefix}/"
        by_path = {root + f.path: f for f in files}
        dataset = ds.dataset(
            list(by_path), schema=_FILE_SCHEMA, format="parquet", filesystem=self._fs
        )
        columns = [c for c in TAIL_COLUMNS if c in _FILE_SCHEMA.names]
        scanner = dataset.scanner(
            columns=columns, filter=ds.field("trade_ts") >= since, use_threads=True
        )
        batches: dict[str, list[pa.RecordBatch]] = {path: [] for path in by_path}
        for tagged in scanner.scan_batches():
            batches[tagged.fragment.path].append(tagged.record_batch)
        schema = pa.schema([_FILE_SCHEMA.field(c) for c in columns])
        for path, parts in batches.items():
            file = by_path[path]
            self._remember(
                file.path, _with_symbol(pa.Table.from_batches(parts, schema=schema), file.symbol)
            )


def _with_symbol(table: pa.Table, symbol: str) -> pa.Table:
    """A data file's rows with the partition's ``symbol`` (the file leaves it out), in the
    tail's schema."""
    if "symbol" not in table.column_names:
        table = table.append_column("symbol", pa.array([symbol] * table.num_rows, pa.string()))
    table = table.select(TAIL_COLUMNS)
    return table if table.schema.equals(TAIL_SCHEMA) else table.cast(TAIL_SCHEMA)
