"""The data contracts of finpipe: one definition each, imported everywhere.

* the raw Finnhub frame and the Kafka trade record (msgspec structs: they are the
  type validators and the (de)serializers at once),
* what a valid trade is beyond its types (``finpipe.validity``, re-exported here),
* the dead-letter record,
* the lake table ``processed_trades`` (a pyarrow schema; Spark derives its own from it),
* the names of topics, bucket, prefixes and object keys.

See ``docs/architecture.md`` for the guarantees behind them.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Iterable
from typing import Literal, NamedTuple

import msgspec
import pyarrow as pa

# The validity rule, re-exported: the contracts are one import.
from finpipe.validity import DEFAULT_FUTURE_TOLERANCE_MS as DEFAULT_FUTURE_TOLERANCE_MS
from finpipe.validity import EPOCH_2000_MS as EPOCH_2000_MS
from finpipe.validity import MAX_SYMBOL_LENGTH as MAX_SYMBOL_LENGTH
from finpipe.validity import is_valid_symbol as is_valid_symbol
from finpipe.validity import is_valid_trade as is_valid_trade
from finpipe.validity import timestamp_problem, trade_problem
from finpipe.validity import values_in_range as values_in_range

# --- names -----------------------------------------------------------------------------

TRADES_TOPIC = "stock-ticks"
DLQ_TOPIC = "stock-ticks-dlq"
LAKE_BUCKET = "warehouse"
LAKE_PREFIX = "processed_trades"
SUMMARIES_PREFIX = "summaries"

TradeSource = Literal["finnhub", "simulator", "replay"]

# --- raw Finnhub frames ------------------------------------------------------------------


class RawTrade(msgspec.Struct, frozen=True):
    """One element of a Finnhub ``trade`` frame's ``data`` list."""

    p: float
    s: str
    t: int
    v: float
    c: list[str] | None = None


class TradeFrame(msgspec.Struct, tag_field="type", tag="trade", frozen=True):
    data: list[RawTrade]


class PingFrame(msgspec.Struct, tag_field="type", tag="ping", frozen=True):
    pass


class ErrorFrame(msgspec.Struct, tag_field="type", tag="error", frozen=True):
    msg: str


ServerFrame = TradeFrame | PingFrame | ErrorFrame

# --- the Kafka record (topic `stock-ticks`, key = symbol) -------------------------------


class TradeRecord(msgspec.Struct, frozen=True):
    symbol: str
    price: float
    volume: float
    trade_ts_ms: int
    conditions: list[str] | None
    ingest_ts_ms: int
    source: TradeSource
    log_position: str | None = None
    """Where the producer's receive log holds it (see ``LogPosition``); None only for
    records written by something other than the producer."""


def record_problem(
    record: TradeRecord, now_ms: int, future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_MS
) -> str | None:
    """Why a decoded Kafka record is not a valid trade (ranges; msgspec did the types).

    ``ingest_ts_ms`` must be plausible too: it becomes a lake timestamp, and a value far
    outside the calendar breaks readers (DuckDB's timestamps end in the year 294247).
    """
    problem = trade_problem(
        record.symbol,
        record.price,
        record.volume,
        record.trade_ts_ms,
        now_ms,
        future_tolerance_ms,
    )
    return problem or timestamp_problem(
        "ingest_ts_ms", record.ingest_ts_ms, now_ms, future_tolerance_ms
    )


# Where in the producer's receive log a record came from: the field ``log_position`` of
# every record the producer writes (trades and dead letters), ``<log id>:<seq>:<item>``.
# (log id, seq, item) is unique per received item, so a restarted producer resends exactly
# what Kafka lacks, and a drill reconciles the topic with the log by source sequence.
# A field of the value, not a Kafka header: librdkafka's handling of a header costs about
# as much per record as the rest of the produce call (docs/benchmarks/producer.md).


class LogPosition(NamedTuple):
    log_id: str
    """The receive log's identity (hex), fixed for the life of its directory."""
    seq: int
    """The log record: one received frame."""
    item: int
    """The item's index in the frame: trades first, in order, then its dead letters."""


def log_position_prefix(log_id: str, seq: int) -> str:
    """``log_position`` without the item: ``prefix + str(item)`` is the field's value."""
    return f"{log_id}:{seq}:"


def log_position(log_id: str, seq: int, item: int) -> str:
    return f"{log_id}:{seq}:{item}"


def parse_log_position(value: str) -> LogPosition:
    log_id, seq, item = value.split(":")
    return LogPosition(log_id, int(seq), int(item))


class Positioned(msgspec.Struct):
    """Only the ``log_position`` of a trade record or dead letter (reading it back is
    cheaper than decoding the whole record)."""

    log_position: str | None = None


class DeadLetter(msgspec.Struct, frozen=True):
    """A record of topic `stock-ticks-dlq`: what arrived, why it was rejected, when."""

    raw: str
    reason: str
    received_ts_ms: int
    source: TradeSource
    log_position: str | None = None
    """As for ``TradeRecord``: where the receive log holds the rejected input."""


# --- the lake table `processed_trades` ---------------------------------------------------

LAKE_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("trade_value", pa.float64(), nullable=False),
        pa.field("trade_ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("ingest_ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("processed_ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("conditions", pa.list_(pa.string()), nullable=True),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("trade_date", pa.date32(), nullable=False),
    ]
)
"""Every data file holds all these columns, partition columns included, so a reader
never depends on how a partition folder's name encodes a symbol."""


def quote_partition_value(value: str) -> str:
    """A partition value as a folder name holds it: percent-encoded the way Spark, Hive and
    delta-rs escape them (``BINANCE:BTCUSDT`` -> ``BINANCE%3ABTCUSDT``)."""
    return urllib.parse.quote(value, safe="")


def partition_dir(trade_date: str, symbol: str) -> str:
    """The object-key folder of one lake partition, relative to the lake prefix; the true
    symbol is the column in the file."""
    return f"trade_date={trade_date}/symbol={quote_partition_value(symbol)}"


def symbol_from_partition_value(value: str) -> str:
    return urllib.parse.unquote(value)


def trade_dates(first: dt.date, last: dt.date) -> list[dt.date]:
    """The ``trade_date`` partitions from ``first`` to ``last``, both included."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def batch_file_name(batch_id: int) -> str:
    """Deterministic object name of one micro-batch's file: a replay overwrites it."""
    return f"batch-{batch_id:012d}.parquet"


def compacted_file_name(upto_batch_id: int) -> str:
    """Name of a partition's compacted file holding every batch up to ``upto_batch_id``
    (the first form of compacted data; read as the segment ``0..upto_batch_id``)."""
    return f"compacted-upto-{upto_batch_id:012d}.parquet"


def compacted_segment_name(first_batch_id: int, last_batch_id: int) -> str:
    """Name of a compacted segment: the rows of the folder's batches ``first..last``."""
    if first_batch_id > last_batch_id:
        raise ValueError(f"segment {first_batch_id}..{last_batch_id} is empty")
    return f"compacted-{first_batch_id:012d}-{last_batch_id:012d}.parquet"


_BATCH_NAME = re.compile(r"^batch-(\d{12})\.parquet$")
_COMPACTED_NAME = re.compile(r"^compacted-upto-(\d{12})\.parquet$")
_SEGMENT_NAME = re.compile(r"^compacted-(\d{12})-(\d{12})\.parquet$")


class LakeObjectName(NamedTuple):
    compacted: bool
    batch_id: int  # the batch's id, or the last batch a compacted file holds
    first_batch_id: int = -1  # the first batch a compacted file holds (-1: batch_id)

    @property
    def first(self) -> int:
        """The first batch id this object covers (a batch covers only its own)."""
        return self.batch_id if self.first_batch_id < 0 else self.first_batch_id

    def covers(self, other: LakeObjectName) -> bool:
        """True when every batch ``other`` holds is also in this object."""
        return self.first <= other.first and other.batch_id <= self.batch_id


def parse_lake_object_name(name: str) -> LakeObjectName | None:
    """What a partition folder's object is, from its base name; None: not table data."""
    if found := _BATCH_NAME.match(name):
        return LakeObjectName(False, int(found[1]))
    if found := _COMPACTED_NAME.match(name):
        return LakeObjectName(True, int(found[1]), 0)
    if found := _SEGMENT_NAME.match(name):
        first, last = int(found[1]), int(found[2])
        return LakeObjectName(True, last, first) if first <= last else None
    return None


def visible_object_names(names: Iterable[str]) -> list[str]:
    """The objects of one partition folder that make up the table, sorted: the reading rule.

    Every compacted object covers a range of batch ids: ``compacted-<first>-<last>``
    holds the rows of the folder's batches ``first..last`` (``compacted-upto-<N>``, the
    older form, the range ``0..N``). The table is

    * the compacted objects no other compacted object covers (the *maximal* ones), taken
      newest ``last`` first and skipping any that overlaps one already taken, and
    * every batch file no taken compacted object covers.

    Writers keep the ranges nested or disjoint (a compaction folds whole visible objects
    into one new segment, one compaction of a folder at a time), so the overlap rule only
    decides what a broken writer left. Covered objects are leftovers a compaction is
    about to delete (or was stopped before deleting): never read them. An interrupted
    compaction leaves its inputs visible (its segment was not written) or hidden (it
    was: one PUT), never both, so every batch is read exactly once at any moment. A batch
    that arrives after its range was compacted (late trades, a replayed session) carries
    a higher id: it is visible at once, and the next compaction folds it in.
    """
    parsed = {name: p for name in names if (p := parse_lake_object_name(name)) is not None}
    taken = taken_segments(parsed)
    segments = [parsed[name] for name in taken]
    return sorted(
        taken
        + [
            n
            for n, p in parsed.items()
            if not p.compacted and not any(s.covers(p) for s in segments)
        ]
    )


def taken_segments(parsed: dict[str, LakeObjectName]) -> list[str]:
    """The compacted objects the reading rule reads: newest ``last`` first, the widest
    first among equals (then by name, so two names of one range never both count)."""
    segments = sorted(
        (name for name, p in parsed.items() if p.compacted),
        key=lambda n: (-parsed[n].batch_id, parsed[n].first, n),
    )
    taken: list[LakeObjectName] = []
    names: list[str] = []
    for name in segments:
        segment = parsed[name]
        if not any(t.first <= segment.batch_id and segment.first <= t.batch_id for t in taken):
            taken.append(segment)
            names.append(name)
    return names


# --- rejected input of the Spark query (kept, never dropped) ------------------------------

LAKE_REJECTS_DIR = "_rejects"
"""Folder under the lake prefix with the Kafka records that are not a valid ``TradeRecord``:
``<lake_prefix>/_rejects/<batch_file_name(batch_id)>``. The ``_`` keeps it out of the table."""

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC"), nullable=True),
        pa.field("key", pa.string(), nullable=True),
        pa.field("value", pa.string(), nullable=True),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("processed_ts", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)
