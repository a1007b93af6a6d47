"""Parse Kafka values into trades with the contract's own validator: pure pyarrow + msgspec.

Why not Spark's ``from_json``: the contract already is a validator (the msgspec struct
``TradeRecord`` for the types, ``contracts.record_problem`` for the ranges), so using it
here means one definition of "a valid record" for the producer and the job, with its
precise error messages as reject reasons; and ``from_json`` (Jackson) is far slower than
msgspec (see docs/benchmarks.md).

Every input row comes out: valid ones with the lake's columns, the others with
``valid = false``, a ``reject_reason`` and their raw key/value. Nothing a record holds
can fail the batch: undecodable, mistyped, out of range and overflowing values are all
rejects. "Now" for the future-timestamp rule is the batch's planned time
(``batch_ts_ms``), which Spark keeps in the checkpoint: a replayed batch splits its
records into trades and rejects exactly as the first attempt did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import msgspec
import pyarrow as pa

from finpipe.contracts import DEFAULT_FUTURE_TOLERANCE_MS, TradeRecord, record_problem

MS_PER_DAY = 86_400_000

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


def judge(
    raw: bytes | None, now_ms: int, future_tolerance_ms: int
) -> tuple[TradeRecord | None, str | None]:
    """(the trade, None) for a valid record, else (None, why not)."""
    if raw is None:
        return None, "empty Kafka value"
    try:
        record = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        return None, f"not a TradeRecord: {exc}"
    except msgspec.DecodeError as exc:
        return None, f"not JSON: {exc}"
    problem = record_problem(record, now_ms, future_tolerance_ms)
    if problem is not None:
        return None, f"out of range: {problem}"
    return record, None


def parse_kafka_batch(
    batch: pa.RecordBatch, future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_MS
) -> pa.RecordBatch:
    """One Arrow batch of Kafka rows -> ``PREPARED_SCHEMA`` rows, one per input row."""
    out: dict[str, list[object]] = {field.name: [] for field in PREPARED_SCHEMA}
    keys = batch.column("key").to_pylist()
    values = batch.column("value").to_pylist()
    now = batch.column("batch_ts_ms").to_pylist()
    for key, raw, now_ms in zip(keys, values, now, strict=True):
        record, reason = judge(raw, now_ms, future_tolerance_ms)
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


def kafka_batch_parser(
    future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_MS,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function ``DataFrame.mapInArrow`` ships to the executors."""

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield parse_kafka_batch(batch, future_tolerance_ms)

    return parse
