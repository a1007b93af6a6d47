"""Parsing Kafka values with the contract's validator: every row comes out, valid or not."""

from __future__ import annotations

import datetime as dt

import msgspec
import pyarrow as pa

from finpipe.contracts import TradeRecord
from spark.parse import PREPARED_SCHEMA, parse_kafka_batch

MARCH_2_MS = int(dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp() * 1000)
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


def _kafka_batch(values: list[bytes | None]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "key": [b"k"] * len(values),
            "value": values,
            "kafka_partition": list(range(len(values))),
            "kafka_offset": [10 + i for i in range(len(values))],
            "kafka_timestamp": [MARCH_2_MS] * len(values),
        },
        schema=pa.schema(
            [
                ("key", pa.binary()),
                ("value", pa.binary()),
                ("kafka_partition", pa.int32()),
                ("kafka_offset", pa.int64()),
                ("kafka_timestamp", pa.int64()),
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
