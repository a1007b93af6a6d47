"""The data contracts of finpipe: one definition each, imported everywhere.

* the raw Finnhub frame and the Kafka trade record (msgspec structs: they are the
  type validators and the (de)serializers at once),
* what a valid trade is beyond its types (``finpipe.validity``, re-exported here),
* the dead-letter record,
* the lake's Delta tables ``processed_trades`` and its rejects (schemas, layout, properties),
* the names of topics, bucket, prefixes and object keys.

See ``docs/architecture.md`` for the guarantees behind them.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from dataclasses import dataclass
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


# --- the lake table `processed_trades` (a Delta Lake table) -------------------------------

LAKE_TS = pa.timestamp("us", tz="UTC")
"""Delta Lake's one timestamp type (microseconds, UTC): every engine reads it as itself."""

LAKE_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("trade_value", pa.float64(), nullable=False),
        pa.field("trade_ts", LAKE_TS, nullable=False),
        pa.field("ingest_ts", LAKE_TS, nullable=False),
        pa.field("processed_ts", LAKE_TS, nullable=False),
        pa.field("conditions", pa.list_(pa.string()), nullable=True),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("trade_date", pa.date32(), nullable=False),
    ]
)
"""The table's columns as every reader sees them. ``trade_date`` and ``symbol`` are its
partition columns: as Delta writers do, the data files leave them out and the log's
``partitionValues`` hold them (the true symbol, never a folder name's encoding)."""


def quote_partition_value(value: str) -> str:
    """A partition value as a folder name holds it: percent-encoded the way Spark, Hive and
    delta-rs escape them (``BINANCE:BTCUSDT`` -> ``BINANCE%3ABTCUSDT``)."""
    return urllib.parse.quote(value, safe="")


def trade_dates(first: dt.date, last: dt.date) -> list[dt.date]:
    """The ``trade_date`` partitions from ``first`` to ``last``, both included."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass(frozen=True)
class TableSpec:
    """One Delta table of the lake: what it holds and how it is laid out."""

    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...]
    stats_columns: tuple[str, ...]
    """The columns whose bounds each file's log entry records: the ones readers prune by
    (fewer columns, a smaller log)."""
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def file_schema(self) -> pa.Schema:
        """The columns a data file holds (the partition columns are in the log)."""
        return pa.schema([f for f in self.schema if f.name not in self.partition_by])

    @property
    def configuration(self) -> dict[str, str]:
        return dict(self.properties)


LAKE_STATS_COLUMNS = ("trade_ts", "kafka_partition", "kafka_offset")

TABLE_PROPERTIES = (
    ("delta.checkpointInterval", "100"),
    ("delta.logRetentionDuration", "interval 24 hours"),
    ("delta.deletedFileRetentionDuration", "interval 1 hours"),
)
"""Every finpipe table's properties: a checkpoint each 100 commits bounds the log a reader
replays; a day of log for time travel; replaced files kept an hour for readers that hold
an older snapshot (docs/design/open-table.md)."""

LAKE_TABLE = TableSpec(
    name=LAKE_PREFIX,
    schema=LAKE_SCHEMA,
    partition_by=("trade_date", "symbol"),
    stats_columns=LAKE_STATS_COLUMNS,
    properties=(
        *TABLE_PROPERTIES,
        ("delta.dataSkippingStatsColumns", ",".join(LAKE_STATS_COLUMNS)),
    ),
)

SPARK_APP_ID = "finpipe-spark/processed_trades"
"""The streaming query's identity in the tables' application transactions: each micro-batch
commits ``(SPARK_APP_ID, batch id)``. Fixed, not Spark's query id: a new checkpoint keeps
the name, so the writer notices that the table is ahead of it instead of starting over."""

# --- rejected input of the Spark query (kept, never dropped) ------------------------------

REJECTS_SUFFIX = "_rejects"
"""The rejects table lives beside the lake table: ``<lake_prefix>_rejects``
(``processed_trades_rejects``): the Kafka records that are not a valid ``TradeRecord``."""

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("kafka_timestamp", LAKE_TS, nullable=True),
        pa.field("key", pa.string(), nullable=True),
        pa.field("value", pa.string(), nullable=True),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("processed_ts", LAKE_TS, nullable=False),
        pa.field("processed_date", pa.date32(), nullable=False),
    ]
)

REJECTS_TABLE = TableSpec(
    name=LAKE_PREFIX + REJECTS_SUFFIX,
    schema=REJECTS_SCHEMA,
    partition_by=("processed_date",),
    stats_columns=("kafka_partition", "kafka_offset"),
    properties=(
        *TABLE_PROPERTIES,
        ("delta.dataSkippingStatsColumns", "kafka_partition,kafka_offset"),
    ),
)
