"""The newest rows of the lake table, read incrementally for the dashboard's "last minutes".

Why not ``finpipe.lake.lake_dataset(settings, [today])`` on every refresh: by the end of a
day a 5 s trigger has written ~17,000 objects per symbol; listing and opening all of them
every few seconds would make the page slower the longer the day runs. This reader keeps
state between refreshes instead:

* it lists each partition of the tail's days with S3's ``StartAfter``, so a refresh
  lists only the objects written since the previous one (micro-batch objects are named
  ``batch-<zero-padded id>.parquet`` and sort in the order they are written);
* its first listing of a day is bounded too: a binary search over batch ids, with
  one-key listings of one partition, finds the newest batch written before the window
  (``RECENT_SLACK`` earlier still), and every partition of the day is listed after it.
  One micro-batch writes all partitions, so batch ids mean the same time in every folder;
  a fresh process at the end of a busy day lists minutes of objects, not the whole day;
* it reads only objects written inside the tail window (a row's file cannot be older
  than the row's ``trade_ts``, so ``LastModified >= cutoff`` selects every candidate),
  keeps them in memory, and forgets them once they fall out of the window;
* it honours the lake's reading rule like ``finpipe.lake`` does
  (``contracts.visible_object_names``) over the batch files it listed and every compacted
  object of the folder (compacted names sort after batch names, so every listing returns
  them all; a rolling-compacted day holds a few per symbol): a compacted segment replaces
  the batch files it covers, and a segment written before the window is not read;
* when an object it listed vanished before it was read (a compaction deleted it after its
  grace period), it forgets its listing and reads once more (``lake.read_relisting``).

Objects are immutable except for a replayed micro-batch, which rewrites the same key with
the same rows; caching by key therefore never shows a row twice.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import posixpath
import threading
from dataclasses import dataclass, field
from typing import Any

import obstore
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import structlog

from finpipe import contracts, lake
from finpipe.lake import s3_filesystem
from finpipe.settings import Settings

log = structlog.get_logger(__name__)

# Objects written during the last seconds are listed again on the next refresh, so a file
# that became visible out of key order (parallel writers) is never skipped.
RELIST_SECONDS = 30.0
# Tolerated clock difference between the object store and the writers.
CLOCK_SLACK = dt.timedelta(seconds=60)
# The first listing of a day starts after the newest batch written this long before the
# window (and CLOCK_SLACK): the objects of one micro-batch are written within its run
# time, so a batch seen written earlier cannot hold a row of the window in any folder.
RECENT_SLACK = dt.timedelta(minutes=5)
# Partitions probed for the first listing's start before settling for the best found (a
# day of quiet partitions only costs a longer first listing, never a missed row).
PROBED_PARTITIONS = 4
# Listings in flight at once (the partitions of a refresh, the probes of a search).
LIST_THREADS = 8
# Objects up to this size are read whole, one GET each (obstore: pyarrow's filesystem
# sends a HEAD before every GET), and decoded in the tail's threads;
# larger ones (compacted segments) through a dataset scan that skips the row groups
# before the cutoff. A micro-batch object holds seconds of one symbol's trades: the
# dataset's per-file overhead was most of reading one (docs/benchmarks/dashboard.md).
SMALL_OBJECT_BYTES = 1 << 20
# More chunks than this in the tail are combined into one before the page queries it.
MAX_CHUNKS = 64
# Batch ids are 12 digits (contracts.batch_file_name).
_MAX_BATCH_ID = 10**12 - 1
TAIL_COLUMNS = [name for name in contracts.LAKE_SCHEMA.names if name != "trade_date"]
TAIL_SCHEMA = pa.schema([contracts.LAKE_SCHEMA.field(name) for name in TAIL_COLUMNS])


@dataclass
class _Object:
    key: str
    modified: dt.datetime
    size: int


@dataclass
class _Partition:
    prefix: str  # key prefix of the partition folder, ending in "/"
    start_after: str = ""  # listing watermark: always a batch object's key
    batches: dict[str, _Object] = field(default_factory=dict)  # listed, inside the window
    # Every compacted object of the folder, as the latest listing found them: compacted
    # names sort after batch names, so each listing from the watermark returns them all.
    compacted: dict[str, _Object] = field(default_factory=dict)

    def visible(self, keep_after: dt.datetime) -> dict[str, _Object]:
        """The reading rule (``contracts.visible_object_names``) over what is known, less
        the objects written before ``keep_after``: an object cannot hold a row newer than
        itself, and a compacted object is written after every batch it holds.

        Batch files a compacted object covers are forgotten (a compaction deletes them).
        Batch files not listed again (before the watermark) are either covered, and then
        invisible whatever else the folder holds, or older than the window; compacted
        objects are all listed, so the rule sees exactly the folder's taken segments."""
        known = {**self.batches, **self.compacted}
        by_name = {posixpath.basename(key): key for key in known}
        visible = {by_name[name] for name in contracts.visible_object_names(by_name)}
        for key in [key for key in self.batches if key not in visible]:
            del self.batches[key]
        return {key: known[key] for key in visible if known[key].modified >= keep_after}


@dataclass
class ListingStats:
    """What the tail's listings returned since it was made (for tests and benchmarks):
    pages of results (one request each up to 1,000 keys) and the object keys in them."""

    listings: int = 0
    keys: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, keys: int) -> None:
        with self._lock:
            self.listings += 1
            self.keys += keys


def s3_client(settings: Settings) -> Any:
    """A client that fails fast: a dashboard must not hang on a dead endpoint."""
    return lake.s3_client(settings, max_attempts=1, connect_timeout=2, read_timeout=5)


class LakeTail:
    """Rows of ``processed_trades`` with ``trade_ts`` in the last ``minutes``; thread-safe."""

    def __init__(
        self,
        settings: Settings,
        minutes: int | None = None,
        *,
        client: Any = None,
        filesystem: pafs.FileSystem | None = None,
        store: Any = None,
    ) -> None:
        self.settings = settings
        self.window = dt.timedelta(minutes=minutes or settings.dashboard_tail_minutes)
        self._client = client or s3_client(settings)
        self._fs = filesystem or s3_filesystem(settings)
        self._store = store or lake.object_store(
            settings, timeout_seconds=5, connect_timeout_seconds=2
        )
        self.listed = ListingStats()
        self._partitions: dict[str, _Partition] = {}
        self._tables: dict[str, pa.Table] = {}
        self._oldest: dict[str, dt.datetime] = {}  # oldest trade_ts per table in memory
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(LIST_THREADS, "lake-tail-list")

    def cutoff(self, now: dt.datetime) -> dt.datetime:
        return now - self.window

    def read(self, now: dt.datetime) -> pa.Table:
        """The tail as of ``now`` (rows with ``cutoff(now) <= trade_ts``), schema TAIL_SCHEMA."""
        cutoff = self.cutoff(now)
        with self._lock:
            tables = lake.read_relisting(lambda: self._read_once(cutoff, now), what="lake tail")
        if not tables:
            return TAIL_SCHEMA.empty_table()
        table = pa.concat_tables(tables)
        # One chunk per object otherwise: DuckDB's scan of an Arrow table pays per chunk,
        # and 50 symbols' young batch files made the trade tape query 6x slower
        # (docs/benchmarks/dashboard.md). One copy of the tail per refresh is cheaper.
        return table.combine_chunks() if table.column(0).num_chunks > MAX_CHUNKS else table

    def _read_once(self, cutoff: dt.datetime, now: dt.datetime) -> list[pa.Table]:
        try:
            wanted = self._refresh_listing(cutoff, now)
            self._load(wanted, cutoff)
            return [self._since(key, cutoff) for key in sorted(wanted)]
        except Exception:
            # Whatever failed (an object a compaction deleted after its grace period, an
            # unreachable endpoint), the next attempt lists from scratch.
            self._partitions.clear()
            self._tables.clear()
            self._oldest.clear()
            raise

    def _since(self, key: str, cutoff: dt.datetime) -> pa.Table:
        """The object's rows from ``cutoff`` on, trimmed in memory for the next reads.

        Only objects holding rows older than the cutoff are filtered (the cutoff only moves
        forward): filtering the whole tail on every refresh was the largest CPU cost of a
        refresh (docs/benchmarks/dashboard.md), and most objects need no filtering.
        """
        oldest = self._oldest.get(key)
        if oldest is None or oldest >= cutoff:
            return self._tables[key]
        table = self._tables[key]
        since = pa.scalar(cutoff, TAIL_SCHEMA.field("trade_ts").type)
        table = table.filter(pc.greater_equal(table["trade_ts"], since))
        self._remember(key, table)
        return table

    def _remember(self, key: str, table: pa.Table) -> None:
        self._tables[key] = table
        oldest = pc.min(table["trade_ts"]).as_py() if table.num_rows else None
        if oldest is None:
            self._oldest.pop(key, None)
        else:
            self._oldest[key] = oldest

    # --- listing ------------------------------------------------------------------------

    def _days(self, cutoff: dt.datetime, now: dt.datetime) -> list[dt.date]:
        return contracts.trade_dates(cutoff.date(), now.date())

    def _refresh_listing(self, cutoff: dt.datetime, now: dt.datetime) -> dict[str, _Object]:
        keep_after = cutoff - CLOCK_SLACK
        days = self._days(cutoff, now)
        day_prefixes = [f"{self.settings.lake_prefix}/trade_date={d.isoformat()}/" for d in days]
        for prefix in list(self._partitions):
            if not prefix.startswith(tuple(day_prefixes)):
                del self._partitions[prefix]
        for day_prefix in day_prefixes:
            found = self._list_partitions(day_prefix)
            new = [prefix for prefix in found if prefix not in self._partitions]
            if new:
                start = self._recent_start(new, keep_after - RECENT_SLACK)
                for prefix in new:
                    self._partitions[prefix] = _Partition(prefix, start and prefix + start)
            # one LIST per partition and refresh: in parallel, as a refresh waits for all
            partitions = [self._partitions[prefix] for prefix in found]
            list(self._pool.map(lambda p: self._list_new_objects(p, keep_after, now), partitions))
        wanted: dict[str, _Object] = {}
        for partition in self._partitions.values():
            wanted.update(partition.visible(keep_after))
        for key in list(self._tables):
            if key not in wanted:
                del self._tables[key]
                self._oldest.pop(key, None)
        return wanted

    def _list_partitions(self, day_prefix: str) -> list[str]:
        found: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.settings.s3_bucket, Prefix=day_prefix, Delimiter="/")
        for page in pages:
            self.listed.add(len(page.get("Contents", [])))
            for common in page.get("CommonPrefixes", []):
                if common["Prefix"][len(day_prefix) :].startswith("symbol="):
                    found.append(common["Prefix"])
        return found

    def _recent_start(self, prefixes: list[str], before: dt.datetime) -> str:
        """Where the first listing of these partitions of one day starts (an object name;
        "" = list all): after the newest batch object of a probed partition written before
        ``before``.

        Probes up to PROBED_PARTITIONS partitions in turn until one has an object written
        since ``before`` (a partition that went quiet says little about the others), each a binary
        search over batch ids with one-key listings: about 13 rounds of LIST_THREADS requests,
        however many objects the day holds.
        """
        old = -1  # newest batch id known to be written before ``before``
        for prefix in prefixes[:PROBED_PARTITIONS]:
            old, recent = self._search_partition(prefix, before, old)
            if recent:
                break
        return contracts.batch_file_name(old) if old >= 0 else ""

    def _search_partition(self, prefix: str, before: dt.datetime, old: int) -> tuple[int, bool]:
        """(newest batch id written before ``before``, found in this partition or known,
        whether the partition holds a batch written since)."""
        first = self._first_batch_after(prefix, old)
        if first is None or first[1] >= before:  # a small day costs one request
            return old, first is not None
        low, high, recent = first[0], _MAX_BATCH_ID, False
        while high - low > 1:
            # LIST_THREADS probes at once split the range into LIST_THREADS + 1 parts, so a
            # round costs one round trip and the search ~13 rounds instead of ~40.
            step = (high - low) / (LIST_THREADS + 1)
            points = sorted({low + max(1, int(step * k)) for k in range(1, LIST_THREADS + 1)})
            points = [x for x in points if x < high]
            probes = self._pool.map(lambda x: (x, self._first_batch_after(prefix, x)), points)
            for point, found in probes:  # old, then recent or none: the answers are monotone
                if found is not None and found[1] < before:
                    low = max(low, found[0])
                else:
                    high, recent = point, recent or found is not None
                    break
        return low, recent

    def _first_batch_after(self, prefix: str, batch_id: int) -> tuple[int, dt.datetime] | None:
        """(id, LastModified) of the partition's first batch object after ``batch_id``."""
        page = self._client.list_objects_v2(
            Bucket=self.settings.s3_bucket,
            Prefix=prefix,
            StartAfter=prefix + contracts.batch_file_name(batch_id),
            MaxKeys=1,
        )
        self.listed.add(len(page.get("Contents", [])))
        for item in page.get("Contents", []):
            name = contracts.parse_lake_object_name(posixpath.basename(item["Key"]))
            if name is not None and not name.compacted:
                return name.batch_id, item["LastModified"]
        return None

    def _list_new_objects(
        self, partition: _Partition, keep_after: dt.datetime, now: dt.datetime
    ) -> None:
        relist_from = now - dt.timedelta(seconds=RELIST_SECONDS)
        watermark = partition.start_after
        compacted: dict[str, _Object] = {}
        # obstore: S3's StartAfter, and the XML of every refresh's 50 listings parsed in
        # Rust (botocore's parsing was most of a warm refresh, docs/benchmarks/dashboard.md)
        listing = obstore.list(
            self._store, partition.prefix, offset=partition.start_after or None, chunk_size=1000
        )
        for page in listing:
            self.listed.add(len(page))
            for item in page:
                key: str = item["path"]
                name = contracts.parse_lake_object_name(posixpath.basename(key))
                if name is None:
                    continue
                obj = _Object(key, item["last_modified"], int(item["size"]))
                if name.compacted:
                    compacted[key] = obj
                    continue
                if obj.modified < relist_from and key > watermark:
                    watermark = key
                if obj.modified >= keep_after:
                    partition.batches[key] = obj
        partition.start_after = watermark
        partition.compacted = compacted
        for key, obj in list(partition.batches.items()):
            if obj.modified < keep_after:
                del partition.batches[key]

    # --- reading ------------------------------------------------------------------------

    def _load(self, wanted: dict[str, _Object], cutoff: dt.datetime) -> None:
        """Read the objects not yet in memory, in parallel. Rows before ``cutoff`` are
        dropped at load time for the large objects and by ``_since`` for the small ones
        (safe because the cutoff only moves forward)."""
        missing = sorted(key for key in wanted if key not in self._tables)
        if not missing:
            return
        since = pa.scalar(cutoff, TAIL_SCHEMA.field("trade_ts").type)
        small = [key for key in missing if wanted[key].size <= SMALL_OBJECT_BYTES]
        for key, table in self._pool.map(lambda key: (key, self._read_small(key)), small):
            self._remember(key, table)
        large = [key for key in missing if wanted[key].size > SMALL_OBJECT_BYTES]
        if large:
            self._read_large(large, since)
        log.debug("lake_tail.loaded", files=len(missing), small=len(small))

    def _read_small(self, key: str) -> pa.Table:
        """One GET (obstore) and a decode; rows before the cutoff are dropped by ``_since``,
        which filters only objects older than the cutoff (most hold only newer rows)."""
        data = obstore.get(self._store, key).bytes()
        parquet = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
        table = parquet.read(columns=TAIL_COLUMNS, use_threads=False)
        return table if table.schema.equals(TAIL_SCHEMA) else table.cast(TAIL_SCHEMA)

    def _read_large(self, keys: list[str], since: pa.Scalar) -> None:
        paths = [f"{self.settings.s3_bucket}/{key}" for key in keys]
        dataset = ds.dataset(
            paths, schema=contracts.LAKE_SCHEMA, format="parquet", filesystem=self._fs
        )
        scanner = dataset.scanner(
            columns=TAIL_COLUMNS, filter=ds.field("trade_ts") >= since, use_threads=True
        )
        batches: dict[str, list[pa.RecordBatch]] = {key: [] for key in keys}
        bucket_prefix = f"{self.settings.s3_bucket}/"
        for tagged in scanner.scan_batches():
            batches[tagged.fragment.path.removeprefix(bucket_prefix)].append(tagged.record_batch)
        for key, parts in batches.items():
            self._remember(key, pa.Table.from_batches(parts, schema=TAIL_SCHEMA))
