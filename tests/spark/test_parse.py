"""Parsing Kafka values with the contract's validator: every row comes out, valid or not."""

from __future__ import annotations

import datetime as dt

import msgspec
import pyarrow as pa
import pytest

from finpipe.contracts import DEFAULT_FUTURE_TOLERANCE_MS, TradeRecord
from spark.parse import PREPARED_SCHEMA, parse_kafka_batch
from tests.spark.spark_job_harness import foreign_records

MARCH_2_MS = int(dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp() * 1000)
BATCH_TS_MS = MARCH_2_MS + 60_000
GOOD = [
    TradeRecord(
        "BINANCE:BTCUSDT", 97000.5, 0.25, MARCH_2_MS, ["1", "12"], MARCH_2_MS + 3, "simulator"
    ),
    TradeRecord("BRK.B", 450.0, 0.0, MARCH_2_MS - 1, None, MARCH_2_MS, "finnhub"),
]
BAD = [
    b"not json",
    b'{"symbol":"X","price":1.0,"volume":1.0,"trade_ts_ms":1,"conditions":null,'
    b'"ingest_ts_ms":1,"source":"bloomberg"}',
    b'{"symbol":"X","volume":1.0,"trade_ts_ms":1,"conditions":null,"ingest_ts_ms":1,'
    b'"source":"simulator"}',
    b'{"symbol":"X","price":"1.0","volume":1.0,"trade_ts_ms":1,"conditions":null,'
    b'"ingest_ts_ms":1,"source":"simulator"}',
    None,
    b"\xff\xfe not utf-8",
]


def _kafka_batch(values: list[bytes | None], batch_ts_ms: int = BATCH_TS_MS) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "key": [b"k"] * len(values),
            "value": values,
            "kafka_partition": list(range(len(values))),
            "kafka_offset": [10 + i for i in range(len(values))],
            "kafka_timestamp": [MARCH_2_MS] * len(values),
            "batch_ts_ms": [batch_ts_ms] * len(values),
        },
        schema=pa.schema(
            [
                ("key", pa.binary()),
                ("value", pa.binary()),
                ("kafka_partition", pa.int32()),
                ("kafka_offset", pa.int64()),
                ("kafka_timestamp", pa.int64()),
                ("batch_ts_ms", pa.int64()),
            ]
        ),
    )


def test_valid_records_carry_the_lake_columns() -> None:
    out = parse_kafka_batch(_kafka_batch([msgspec.json.encode(r) for r in GOOD]))
    assert out.schema.equals(PREPARED_SCHEMA)
    rows = out.to_pylist()
    assert [r["valid"] for r in rows] == [True, True]
    btc, brk = rows
    assert btc["symbol"] == "BINANCE:BTCUSDT"
    assert btc["trade_value"] == 97000.5 * 0.25
    assert btc["conditions"] == ["1", "12"]
    assert btc["trade_date"] == dt.date(2026, 3, 2)
    assert (btc["kafka_partition"], btc["kafka_offset"]) == (0, 10)
    assert btc["key"] is None and btc["value"] is None  # raw text only kept for rejects
    # One millisecond before midnight UTC is the previous day.
    assert brk["trade_date"] == dt.date(2026, 3, 1)
    assert brk["volume"] == 0.0 and brk["trade_value"] == 0.0 and brk["conditions"] is None


def test_invalid_records_are_kept_with_their_raw_value_and_a_reason() -> None:
    out = parse_kafka_batch(_kafka_batch(BAD)).to_pylist()
    assert [r["valid"] for r in out] == [False] * len(BAD)
    assert all(r["symbol"] is None and r["trade_date"] is None for r in out)
    reasons = [r["reject_reason"] for r in out]
    assert reasons[0].startswith("not JSON")
    assert "bloomberg" in reasons[1] and "$.source" in reasons[1]
    assert "price" in reasons[2]
    assert "$.price" in reasons[3]
    assert reasons[4] == "empty Kafka value"
    assert out[1]["value"] == BAD[1].decode()
    assert out[4]["value"] is None
    assert out[5]["value"].endswith("not utf-8")
    assert [r["kafka_offset"] for r in out] == [10 + i for i in range(len(BAD))]


def test_an_empty_batch_stays_empty() -> None:
    assert parse_kafka_batch(_kafka_batch([])).num_rows == 0


def test_foreign_records_of_every_kind_are_rejects_with_a_reason() -> None:
    """Out of range, overflowing or mistyped: never an exception, never a lake row."""
    kinds = foreign_records(BATCH_TS_MS)
    good = msgspec.json.encode(GOOD[0])
    values = [good, *kinds.values(), good]
    out = parse_kafka_batch(_kafka_batch(values)).to_pylist()
    assert [r["valid"] for r in out] == [True] + [False] * len(kinds) + [True]
    reasons = dict(zip(kinds, (r["reject_reason"] for r in out[1:-1]), strict=True))
    assert all(reasons.values()), reasons
    assert "ahead of the clock" in reasons["timestamp in microseconds"]
    assert "ahead of the clock" in reasons["timestamp in nanoseconds"]
    assert "price -190.0" in reasons["negative price"]
    assert "volume -1.0" in reasons["negative volume"]
    assert "64-bit" in reasons["integer above int64"]
    assert "missing required field" in reasons["only symbol"]
    assert "symbol is empty" in reasons["empty symbol"]
    assert "before 2000" in reasons["timestamp in seconds"]
    assert "ingest_ts_ms" in reasons["ingest time in nanoseconds"]
    assert "not finite" in reasons["price x volume overflows"]
    for reject, raw in zip(out[1:-1], kinds.values(), strict=True):
        assert reject["value"] == raw.decode("utf-8", errors="replace")
        assert reject["trade_date"] is None


def test_the_future_is_judged_from_the_batch_time_not_the_wall_clock() -> None:
    """A replayed batch carries its original batch time, so it splits alike."""
    edge = TradeRecord(
        "AAPL", 1.0, 1.0, BATCH_TS_MS + DEFAULT_FUTURE_TOLERANCE_MS, None, BATCH_TS_MS, "replay"
    )
    beyond = TradeRecord(
        "AAPL", 1.0, 1.0, BATCH_TS_MS + DEFAULT_FUTURE_TOLERANCE_MS + 1, None, 1, "replay"
    )
    values = [msgspec.json.encode(edge), msgspec.json.encode(beyond)]
    first = parse_kafka_batch(_kafka_batch(values))
    assert [r["valid"] for r in first.to_pylist()] == [True, False]
    assert parse_kafka_batch(_kafka_batch(values)).equals(first)
    # A later batch time accepts what an earlier one rejected: only the batch time counts.
    later = parse_kafka_batch(_kafka_batch(values, BATCH_TS_MS + 10_000_000)).to_pylist()
    assert [r["valid"] for r in later] == [True, False]  # ingest_ts_ms=1 is before 2000


@pytest.mark.parametrize("tolerance_ms", [1_000, 86_400_000])
def test_the_tolerance_is_a_parameter(tolerance_ms: int) -> None:
    ahead = TradeRecord("AAPL", 1.0, 1.0, BATCH_TS_MS + 5_000, None, BATCH_TS_MS, "replay")
    out = parse_kafka_batch(_kafka_batch([msgspec.json.encode(ahead)]), tolerance_ms)
    assert out.to_pylist()[0]["valid"] is (tolerance_ms > 5_000)
