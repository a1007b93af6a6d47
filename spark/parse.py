"""Parse Kafka values into trades with the contract's own validator: pure pyarrow + msgspec.

Why not Spark's ``from_json``: the contract already is a validator (the msgspec struct
``TradeRecord``), so using it here means one definition of "a valid record" for the
producer and the job, with its precise error messages as reject reasons; and ``from_json``
(Jackson) measured many times slower than msgspec, the bottleneck of the job at its
throughput target (docs/benchmarks.md, docs/benchmarks/spark.md).

Every input row comes out: valid ones with the lake's columns, the others with
``valid = false``, a ``reject_reason`` and their raw key/value.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pyarrow as pa

from finpipe.contracts import TradeRecord

MS_PER_DAY = 86_400_000

KAFKA_COLUMNS = ("key", "value", "kafka_partition", "kafka_offset", "kafka_timestamp")
"""What the job selects from Spark's Kafka source (timestamp as epoch milliseconds)."""

PREPARED_SCHEMA = pa.schema(
    [
        pa.field("valid", pa.bool_()),
        pa.field("reject_reason", pa.string()),
        pa.field("symbol", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("volume", pa.float64()),
        pa.field("trade_value", pa.float64()),
        pa.field("trade_ts_ms", pa.int64()),
        pa.field("ingest_ts_ms", pa.int64()),
        pa.field("conditions", pa.list_(pa.string())),
        pa.field("kafka_partition", pa.int32()),
        pa.field("kafka_offset", pa.int64()),
        pa.field("trade_date", pa.date32()),
        pa.field("kafka_timestamp", pa.int64()),
        pa.field("key", pa.string()),
        pa.field("value", pa.string()),
    ]
)
"""Rows between the parse step and the writer (``spark.lake_files``)."""

_DECODER = msgspec.json.Decoder(TradeRecord)
_TRADE_FIELDS = (
    "symbol",
    "price",
    "volume",
    "trade_value",
    "trade_ts_ms",
    "ingest_ts_ms",
    "conditions",
    "trade_date",
)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


def parse_kafka_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """One Arrow batch of Kafka rows -> ``PREPARED_SCHEMA`` rows, one per input row."""
    out: dict[str, list[object]] = {field.name: [] for field in PREPARED_SCHEMA}
    keys = batch.column("key").to_pylist()
    values = batch.column("value").to_pylist()
    for key, raw in zip(keys, values, strict=True):
        record: TradeRecord | None = None
        reason: str | None = None
        if raw is None:
            reason = "empty Kafka value"
        else:
            try:
                record = _DECODER.decode(raw)
            except msgspec.ValidationError as exc:
                reason = f"not a TradeRecord: {exc}"
            except msgspec.DecodeError as exc:
                reason = f"not JSON: {exc}"
        out["valid"].append(record is not None)
        out["reject_reason"].append(reason)
        if record is None:
            for name in _TRADE_FIELDS:
                out[name].append(None)
            out["key"].append(_text(key))
            out["value"].append(_text(raw))
            continue
        out["symbol"].append(record.symbol)
        out["price"].append(record.price)
        out["volume"].append(record.volume)
        out["trade_value"].append(record.price * record.volume)
        out["trade_ts_ms"].append(record.trade_ts_ms)
        out["ingest_ts_ms"].append(record.ingest_ts_ms)
        out["conditions"].append(record.conditions)
        # The UTC day from epoch milliseconds: no time zone can shift it.
        out["trade_date"].append(record.trade_ts_ms // MS_PER_DAY)
        out["key"].append(None)
        out["value"].append(None)
    arrays = []
    for field in PREPARED_SCHEMA:
        if field.name in ("kafka_partition", "kafka_offset", "kafka_timestamp"):
            arrays.append(batch.column(field.name).cast(field.type))
        elif field.name == "trade_date":
            arrays.append(pa.array(out[field.name], pa.int32()).cast(pa.date32()))
        else:
            arrays.append(pa.array(out[field.name], field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=PREPARED_SCHEMA)


def parse_kafka_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """For ``DataFrame.mapInArrow``."""
    for batch in batches:
        yield parse_kafka_batch(batch)
