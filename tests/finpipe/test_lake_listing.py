"""The lake reader's listing rules, over a real local filesystem."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from finpipe import contracts, lake
from finpipe.settings import load_settings

DAY = dt.date(2026, 3, 4)


def _rows(symbol: str, offsets: list[int]) -> pa.Table:
    ts = [dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)] * len(offsets)
    return pa.table(
        {
            "symbol": [symbol] * len(offsets),
            "price": [10.0] * len(offsets),
            "volume": [2.0] * len(offsets),
            "trade_value": [20.0] * len(offsets),
            "trade_ts": ts,
            "ingest_ts": ts,
            "processed_ts": ts,
            "conditions": [None] * len(offsets),
            "kafka_partition": [0] * len(offsets),
            "kafka_offset": offsets,
            "trade_date": [DAY] * len(offsets),
        },
        schema=contracts.LAKE_SCHEMA,
    )


def _write(root: Path, symbol: str, name: str, offsets: list[int]) -> None:
    folder = (
        root / "warehouse" / "processed_trades" / contracts.partition_dir(DAY.isoformat(), symbol)
    )
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(_rows(symbol, offsets), folder / name)


def test_reader_takes_the_compacted_file_and_later_batches_and_skips_non_data(
    tmp_path: Path,
) -> None:
    btc, brk = "BINANCE:BTCUSDT", "BRK.B"
    _write(tmp_path, btc, contracts.batch_file_name(1), [0, 1])  # held by compacted-upto-2
    _write(tmp_path, btc, contracts.batch_file_name(2), [2])
    _write(tmp_path, btc, contracts.compacted_file_name(1), [0, 1])  # an older compaction
    _write(tmp_path, btc, contracts.compacted_file_name(2), [0, 1, 2])
    _write(tmp_path, btc, contracts.batch_file_name(3), [3])  # a late batch, not yet folded in
    _write(tmp_path, brk, contracts.batch_file_name(1), [5])
    _write(tmp_path, brk, "_tmp-batch.parquet", [99])
    _write(tmp_path, brk, "part-00000.parquet", [98])  # not a name the contract writes
    (tmp_path / "warehouse" / "processed_trades" / "_status").mkdir()
    (tmp_path / "warehouse" / "processed_trades" / "_status" / "x.parquet").write_text("no")

    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    settings = load_settings()
    files = lake.list_lake_files(settings, [DAY], filesystem=fs)
    assert [(f.symbol, f.name) for f in files] == [
        (btc, contracts.batch_file_name(3)),
        (btc, contracts.compacted_file_name(2)),
        (brk, contracts.batch_file_name(1)),
    ]
    table = lake.lake_dataset(settings, [DAY], filesystem=fs).to_table()
    assert sorted(table.column("kafka_offset").to_pylist()) == [0, 1, 2, 3, 5]
    assert set(table.column("symbol").to_pylist()) == {btc, brk}


@pytest.mark.parametrize(
    ("names", "visible"),
    [
        ([], []),
        (["batch-000000000002.parquet", "batch-000000000001.parquet"],
         ["batch-000000000001.parquet", "batch-000000000002.parquet"]),
        (["batch-000000000007.parquet", "compacted-upto-000000000007.parquet"],
         ["compacted-upto-000000000007.parquet"]),
        (["compacted-upto-000000000003.parquet", "compacted-upto-000000000009.parquet",
          "batch-000000000009.parquet", "batch-000000000010.parquet"],
         ["batch-000000000010.parquet", "compacted-upto-000000000009.parquet"]),
        (["compacted.parquet", "batch-1.parquet", "x.parquet", "_batch-000000000001.parquet"],
         []),
    ],
)  # fmt: skip
def test_the_reading_rule_of_one_partition_folder(names: list[str], visible: list[str]) -> None:
    assert contracts.visible_object_names(names) == visible


def test_reader_of_a_missing_day_is_empty(tmp_path: Path) -> None:
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    dataset = lake.lake_dataset(load_settings(), [DAY], filesystem=fs)
    assert dataset.to_table().num_rows == 0
    assert dataset.schema == contracts.LAKE_SCHEMA
