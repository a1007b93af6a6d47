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
# Objects under a `_`-prefixed name are never data: pyarrow, Spark and DuckDB skip them.
STATUS_PREFIX = "_status"
SPARK_PROGRESS_KEY = f"{STATUS_PREFIX}/spark_progress.json"

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

LAKE_PARTITION_COLUMNS = ("trade_date", "symbol")


def partition_dir(trade_date: str, symbol: str) -> str:
    """The object-key folder of one lake partition, relative to the lake prefix.

    Symbols are percent-encoded (``BINANCE:BTCUSDT`` -> ``BINANCE%3ABTCUSDT``) the way
    Spark and Hive escape partition values; the true symbol is the column in the file.
    """
    return f"trade_date={trade_date}/symbol={urllib.parse.quote(symbol, safe='')}"


def symbol_from_partition_value(value: str) -> str:
    return urllib.parse.unquote(value)


def trade_dates(first: dt.date, last: dt.date) -> list[dt.date]:
    """The ``trade_date`` partitions from ``first`` to ``last``, both included."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def batch_file_name(batch_id: int) -> str:
    """Deterministic object name of one micro-batch's file: a replay overwrites it."""
    return f"batch-{batch_id:012d}.parquet"


def compacted_file_name(upto_batch_id: int) -> str:
    """Name of a partition's compacted file holding every batch up to ``upto_batch_id``."""
    return f"compacted-upto-{upto_batch_id:012d}.parquet"


_BATCH_NAME = re.compile(r"^batch-(\d{12})\.parquet$")
_COMPACTED_NAME = re.compile(r"^compacted-upto-(\d{12})\.parquet$")


class LakeObjectName(NamedTuple):
    compacted: bool
    batch_id: int  # the batch's id, or the last batch a compacted file holds


def parse_lake_object_name(name: str) -> LakeObjectName | None:
    """What a partition folder's object is, from its base name; None: not table data."""
    if found := _BATCH_NAME.match(name):
        return LakeObjectName(False, int(found[1]))
    if found := _COMPACTED_NAME.match(name):
        return LakeObjectName(True, int(found[1]))
    return None


def visible_object_names(names: Iterable[str]) -> list[str]:
    """The objects of one partition folder that make up the table, sorted: the reading rule.

    The newest compacted file (highest ``upto``) and every batch file written after the
    batches it holds. Batch files it holds, and older compacted files, are leftovers a
    compaction is about to delete (or was stopped before deleting): never read them. So a
    batch that arrives after its day was compacted (late trades, a replayed session) is
    visible at once, and the next compaction folds it in.
    """
    parsed = {name: parse_lake_object_name(name) for name in names}
    upto = max((p.batch_id for p in parsed.values() if p and p.compacted), default=-1)
    return sorted(name for name, p in parsed.items() if p and is_visible_object(p, upto))


def is_visible_object(name: LakeObjectName, compacted_upto: int) -> bool:
    """The reading rule for one object of a partition whose newest compacted file holds
    the batches up to ``compacted_upto`` (-1: none): that file, and batches after it.
    Incremental readers (the dashboard's tail) apply it as they list."""
    return name.batch_id > compacted_upto or (name.compacted and name.batch_id == compacted_upto)


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
