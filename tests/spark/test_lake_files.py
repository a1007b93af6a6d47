"""The executor-side writer: one file per partition in the Delta layout, with the stats
the log records; a replay writes new files with the same rows."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from finpipe import contracts
from spark.lake_files import LAKE_KIND, REJECTS_KIND, LakeLocation, write_batch_rows
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
        location=LakeLocation(str(tmp_path / "trades"), str(tmp_path / "rejects")),
        batch_id=batch_id,
        processed_ts_ms=DAY_MS + 3_600_000,
        filesystem=pafs.LocalFileSystem(),
        threads=threads,
    ).to_pylist()


@pytest.mark.parametrize("threads", [1, 8])
def test_one_file_per_partition_in_the_tables_layout(tmp_path: Path, threads: int) -> None:
    reports = _write(tmp_path, ROWS, threads=threads)
    data = sorted((r for r in reports if r["kind"] == LAKE_KIND), key=lambda r: r["path"])
    assert [r["path"].rsplit("/", 1)[0] for r in data] == [
        "trade_date=2026-03-02/symbol=BINANCE%3ABTCUSDT",
        "trade_date=2026-03-02/symbol=BRK.B",
        "trade_date=2026-03-03/symbol=COINBASE%3ABTC-USD",
    ]
    assert all(r["path"].rsplit("/", 1)[1].startswith("part-000000000007-") for r in data)
    assert [json.loads(r["partition"]) for r in data] == [
        {"trade_date": "2026-03-02", "symbol": "BINANCE:BTCUSDT"},
        {"trade_date": "2026-03-02", "symbol": "BRK.B"},
        {"trade_date": "2026-03-03", "symbol": "COINBASE:BTC-USD"},
    ]
    for report in data:
        path = tmp_path / "trades" / report["path"]
        table = pq.read_table(path)
        # The partition columns are in the log, not in the file (the Delta convention).
        assert table.schema.equals(contracts.LAKE_TABLE.file_schema), table.schema
        assert report["size"] == path.stat().st_size
        assert report["rows"] == table.num_rows
        coords = table.select(["kafka_partition", "kafka_offset"]).to_pylist()
        coords = [(c["kafka_partition"], c["kafka_offset"]) for c in coords]
        assert coords == sorted(coords)
        stats = json.loads(report["stats"])
        assert stats["numRecords"] == table.num_rows
        assert stats["minValues"]["kafka_offset"] == min(c[1] for c in coords)
        assert stats["maxValues"]["kafka_offset"] == max(c[1] for c in coords)
        assert set(stats["minValues"]) == set(contracts.LAKE_STATS_COLUMNS)
    btc = pq.read_table(tmp_path / "trades" / data[0]["path"]).to_pylist()
    assert len(btc) == 3 * 14
    first = btc[0]
    assert first["trade_ts"] == dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    assert first["ingest_ts"] == dt.datetime(2026, 3, 2, 0, 0, 0, 5000, tzinfo=dt.UTC)
    assert first["processed_ts"] == dt.datetime(2026, 3, 2, 1, tzinfo=dt.UTC)
    assert first["conditions"] == ["1", "12"]
    assert btc[1]["conditions"] is None
    assert data[0]["max_trade_ts_ms"] == DAY_MS + 39
    assert sum(r["rows"] for r in data) == len(ROWS) - 2


def test_rejects_are_kept_in_one_file_per_batch(tmp_path: Path) -> None:
    reports = _write(tmp_path, ROWS)
    (rejects,) = [r for r in reports if r["kind"] == REJECTS_KIND]
    assert rejects["path"].startswith("processed_date=2026-03-02/part-000000000007-")
    table = pq.read_table(tmp_path / "rejects" / rejects["path"])
    assert table.schema.equals(contracts.REJECTS_TABLE.file_schema)
    assert table.select(["kafka_partition", "kafka_offset", "value"]).to_pylist() == [
        {"kafka_partition": 0, "kafka_offset": 98, "value": "{not json"},
        {"kafka_partition": 1, "kafka_offset": 99, "value": "{not json"},
    ]


def test_a_replayed_batch_writes_new_files_with_the_same_rows(tmp_path: Path) -> None:
    """Never the same name twice: a replay's files are new, so a committed file is never
    overwritten; its rows are the same, so either run's files make the same table."""

    def rows_by_partition(reports: list[dict[str, object]]) -> dict[str, list[dict]]:
        found = {}
        for r in reports:
            if r["kind"] == LAKE_KIND:
                table = pq.read_table(tmp_path / "trades" / str(r["path"]))
                found[str(r["partition"])] = table.drop_columns(["processed_ts"]).to_pylist()
        return found

    first = _write(tmp_path, ROWS)
    shuffled = ROWS[:]
    random.Random(4).shuffle(shuffled)
    second = _write(tmp_path, shuffled, threads=8)
    assert not {r["path"] for r in first} & {r["path"] for r in second}
    assert rows_by_partition(first) == rows_by_partition(second)
