"""The two-phase write to a Delta table on a local folder: files written first, committed
once per batch, a replay adding nothing; and the facts of delta-rs the lake's design rests
on (the stats it expects, what a lite vacuum may delete, what two compactions do)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from finpipe import delta_commit

APP = "finpipe-spark/processed_trades"
PARTITION_BY = ("trade_date", "symbol")
STATS = ("trade_ts", "kafka_partition", "kafka_offset")
TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("price", pa.float64()),
        ("trade_ts", TS),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("trade_date", pa.date32()),
    ]
)
# Symbols whose folder names need escaping (':'), or look like a file suffix ('.').
SYMBOLS = ("BINANCE:BTCUSDT", "BRK.B", "AAPL")
DAY = dt.date(2026, 3, 2)


def trades(first_offset: int, count: int) -> pa.Table:
    start = dt.datetime.combine(DAY, dt.time(14, 30), tzinfo=dt.UTC)
    rows = [
        {
            "symbol": SYMBOLS[i % len(SYMBOLS)],
            "price": 100.0 + i,
            "trade_ts": start + dt.timedelta(milliseconds=137 * i),
            "kafka_partition": i % len(SYMBOLS),
            "kafka_offset": first_offset + i,
            "trade_date": DAY,
        }
        for i in range(count)
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_files(root: Path, rows: pa.Table, batch_id: int) -> list:
    """What the executors do: one file per (day, symbol), partition columns left out."""
    adds = []
    for symbol in sorted(set(rows["symbol"].to_pylist())):
        part = rows.filter(pc.equal(rows["symbol"], symbol))
        values = {"trade_date": DAY.isoformat(), "symbol": symbol}
        path = delta_commit.data_file_path(values, batch_id)
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part.drop_columns(list(PARTITION_BY)), root / path)
        size = (root / path).stat().st_size
        adds.append(delta_commit.add_action(path, size, values, part, STATS))
    return adds


def commit(root: Path, adds: list, batch_id: int) -> int | None:
    table = DeltaTable(str(root))
    return delta_commit.commit_files(
        table, adds, app_id=APP, batch_id=batch_id, partition_by=PARTITION_BY, schema=SCHEMA
    )


@pytest.fixture
def table_root(tmp_path: Path) -> Path:
    root = tmp_path / "processed_trades"
    DeltaTable.create(str(root), SCHEMA, partition_by=list(PARTITION_BY))
    return root


def offsets(root: Path) -> list[int]:
    return sorted(DeltaTable(str(root)).to_pyarrow_dataset().to_table()["kafka_offset"].to_pylist())


def test_a_batch_commits_once_and_a_replay_adds_nothing(table_root: Path) -> None:
    first, second = trades(0, 30), trades(30, 12)
    assert commit(table_root, write_files(table_root, first, 0), 0) == 1
    # Spark replays batch 0 (the job died before its own commit log): new files, no commit.
    assert commit(table_root, write_files(table_root, first, 0), 0) is None
    assert commit(table_root, write_files(table_root, second, 1), 1) == 2
    assert commit(table_root, write_files(table_root, second, 1), 1) is None
    assert offsets(table_root) == list(range(42))
    table = DeltaTable(str(table_root))
    assert (table.version(), delta_commit.committed_version(table, APP)) == (2, 1)
    # The partition values survive their escaped folder names, whatever engine reads them.
    read = table.to_pyarrow_dataset().to_table()
    assert set(read["symbol"].to_pylist()) == set(SYMBOLS)
    assert sorted(read.to_pylist(), key=lambda r: r["kafka_offset"]) == (
        pa.concat_tables([first, second]).select(read.column_names).to_pylist()
    )


def test_the_stats_are_those_delta_rs_writes_for_the_same_rows(tmp_path: Path) -> None:
    rows = trades(100, 40)
    part = rows.filter(pc.equal(rows["symbol"], "BINANCE:BTCUSDT"))
    twin = tmp_path / "twin"
    write_deltalake(
        str(twin),
        part,
        partition_by=list(PARTITION_BY),
        configuration={"delta.dataSkippingStatsColumns": ",".join(STATS)},
    )
    log = (twin / "_delta_log" / f"{0:020d}.json").read_text().splitlines()
    (theirs,) = [json.loads(json.loads(line)["add"]["stats"]) for line in log if '"add"' in line]
    ours = json.loads(delta_commit.file_stats(part, STATS))
    assert ours == theirs


def test_files_never_committed_are_invisible_to_readers_and_to_a_lite_vacuum(
    table_root: Path,
) -> None:
    assert commit(table_root, write_files(table_root, trades(0, 9), 0), 0) == 1
    orphans = write_files(table_root, trades(9, 9), 1)  # the driver died before committing
    assert offsets(table_root) == list(range(9))
    table = DeltaTable(str(table_root))
    doomed = table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=True)
    assert not {a.path for a in orphans} & {Path(p).as_posix() for p in doomed}
    assert all((table_root / a.path).exists() for a in orphans)


def test_two_compactions_from_one_snapshot_both_commit_and_double_the_rows(
    table_root: Path,
) -> None:
    """Why maintenance never runs twice at once on a table (a canary: when delta-rs starts
    refusing the second compaction, this fails and the guard's reason is to be checked)."""
    for batch in range(4):
        commit(table_root, write_files(table_root, trades(batch * 6, 6), batch), batch)
    first, second = DeltaTable(str(table_root)), DeltaTable(str(table_root))
    first.optimize.compact()
    second.optimize.compact()
    assert len(offsets(table_root)) == 2 * 24
