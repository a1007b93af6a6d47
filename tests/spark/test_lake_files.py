"""The executor-side writer: exact schema, one object per partition, deterministic bytes."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from finpipe import contracts
from spark.lake_files import REJECTS_KIND, LakeLocation, write_batch_rows
from spark.parse import PREPARED_SCHEMA

DAY = dt.date(2026, 3, 2)
DAY_MS = int(dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp() * 1000)


def _trade(symbol: str, partition: int, offset: int, day: dt.date = DAY) -> dict[str, object]:
    ts = DAY_MS + (day - DAY).days * 86_400_000 + offset
    return {
        "valid": True,
        "symbol": symbol,
        "price": 10.0 + offset,
        "volume": float(offset % 3),
        "trade_value": (10.0 + offset) * (offset % 3),
        "trade_ts_ms": ts,
        "ingest_ts_ms": ts + 5,
        "conditions": None if offset % 2 else ["1", "12"],
        "kafka_partition": partition,
        "kafka_offset": offset,
        "trade_date": day,
    }


def _reject(partition: int, offset: int) -> dict[str, object]:
    return {
        "valid": False,
        "reject_reason": "malformed JSON or not a TradeRecord object",
        "kafka_partition": partition,
        "kafka_offset": offset,
        "kafka_timestamp": DAY_MS,
        "key": "k",
        "value": "{not json",
    }


ROWS = [
    *(_trade("BINANCE:BTCUSDT", p, o) for p in range(3) for o in range(0, 40, 3)),
    *(_trade("BRK.B", p, o) for p in range(2) for o in range(1, 30, 7)),
    *(_trade("COINBASE:BTC-USD", 2, o, DAY + dt.timedelta(days=1)) for o in range(5)),
    _reject(1, 99),
    _reject(0, 98),
]


def _write(tmp_path: Path, rows: list[dict[str, object]], batch_id: int = 7, threads: int = 1):  # type: ignore[no-untyped-def]
    table = pa.Table.from_pylist(rows, schema=PREPARED_SCHEMA)
    return write_batch_rows(
        table.to_batches(max_chunksize=10),
        location=LakeLocation(str(tmp_path), "lake"),
        batch_id=batch_id,
        processed_ts_ms=DAY_MS + 3_600_000,
        filesystem=pafs.LocalFileSystem(),
        threads=threads,
    ).to_pylist()


@pytest.mark.parametrize("threads", [1, 8])
def test_one_object_per_partition_with_the_exact_lake_schema(tmp_path: Path, threads: int) -> None:
    reports = _write(tmp_path, ROWS, threads=threads)
    data = sorted(r["path"] for r in reports if r["kind"] != REJECTS_KIND)
    assert [p.split("/lake/")[1] for p in data] == [
        "trade_date=2026-03-02/symbol=BINANCE%3ABTCUSDT/batch-000000000007.parquet",
        "trade_date=2026-03-02/symbol=BRK.B/batch-000000000007.parquet",
        "trade_date=2026-03-03/symbol=COINBASE%3ABTC-USD/batch-000000000007.parquet",
    ]
    for path in data:
        table = pq.read_table(path)
        assert table.schema.equals(contracts.LAKE_SCHEMA), table.schema
        coords = table.select(["kafka_partition", "kafka_offset"]).to_pylist()
        coords = [(c["kafka_partition"], c["kafka_offset"]) for c in coords]
        assert coords == sorted(coords)
    btc = pq.read_table(data[0]).to_pylist()
    assert len(btc) == 3 * 14
    first = btc[0]
    assert first["symbol"] == "BINANCE:BTCUSDT"
    assert first["trade_ts"] == dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    assert first["ingest_ts"] == dt.datetime(2026, 3, 2, 0, 0, 0, 5000, tzinfo=dt.UTC)
    assert first["processed_ts"] == dt.datetime(2026, 3, 2, 1, tzinfo=dt.UTC)
    assert first["conditions"] == ["1", "12"]
    assert btc[1]["conditions"] is None
    assert sum(r["rows"] for r in reports if r["kind"] != REJECTS_KIND) == len(ROWS) - 2


def test_rejects_are_kept_in_one_object_per_batch(tmp_path: Path) -> None:
    reports = _write(tmp_path, ROWS)
    (rejects,) = [r for r in reports if r["kind"] == REJECTS_KIND]
    assert rejects["path"].endswith(f"lake/{contracts.LAKE_REJECTS_DIR}/batch-000000000007.parquet")
    table = pq.read_table(rejects["path"])
    assert table.schema.equals(contracts.REJECTS_SCHEMA)
    assert table.select(["kafka_partition", "kafka_offset", "value"]).to_pylist() == [
        {"kafka_partition": 0, "kafka_offset": 98, "value": "{not json"},
        {"kafka_partition": 1, "kafka_offset": 99, "value": "{not json"},
    ]


def test_a_replayed_batch_rewrites_byte_identical_objects(tmp_path: Path) -> None:
    first = {r["path"]: Path(r["path"]).read_bytes() for r in _write(tmp_path, ROWS)}
    shuffled = ROWS[:]
    random.Random(4).shuffle(shuffled)
    # written concurrently this time: same names, same bytes
    second = {
        r["path"]: Path(r["path"]).read_bytes() for r in _write(tmp_path, shuffled, threads=8)
    }
    assert first == second


def test_a_failed_object_fails_the_task_after_the_others_are_written(tmp_path: Path) -> None:
    """Concurrent writes: one object cannot be written (its folder is a file), so the task
    fails, and by then the writes it started have all ended (Spark retries the task into
    the same names; nothing of the failed attempt is still writing)."""
    blocked = tmp_path / "lake" / "trade_date=2026-03-02" / "symbol=BRK.B"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a folder")
    with pytest.raises(OSError):
        _write(tmp_path, ROWS, threads=8)
    written = sorted(
        p.relative_to(tmp_path / "lake").as_posix() for p in tmp_path.rglob("*.parquet")
    )
    assert written == [
        "trade_date=2026-03-02/symbol=BINANCE%3ABTCUSDT/batch-000000000007.parquet",
        "trade_date=2026-03-03/symbol=COINBASE%3ABTC-USD/batch-000000000007.parquet",
    ]


def test_an_empty_task_writes_nothing(tmp_path: Path) -> None:
    assert _write(tmp_path, []) == []
    assert not any(tmp_path.iterdir())
