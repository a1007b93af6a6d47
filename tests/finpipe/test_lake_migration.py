"""Migrating a lake of the pre-Delta layout: every row once, resumable, old objects gone."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finpipe import contracts, lake, lake_migration, summaries
from finpipe.settings import Settings, load_settings
from spark.job import LakeCheckpointMismatch, check_checkpoint_matches_lake

OLD_TS = pa.timestamp("ms", tz="UTC")
OLD_SCHEMA = pa.schema(
    [
        (f.name, OLD_TS if pa.types.is_timestamp(f.type) else f.type, f.nullable)
        for f in contracts.LAKE_SCHEMA
    ]
)
DAYS = (dt.date(2026, 3, 2), dt.date(2026, 3, 3))


def _rows(day: dt.date, symbol: str, partition: int, offsets: range) -> pa.Table:
    start = dt.datetime.combine(day, dt.time(10), tzinfo=dt.UTC)
    rows = [
        {
            "symbol": symbol,
            "price": 100.0 + o,
            "volume": 1.0,
            "trade_value": 100.0 + o,
            "trade_ts": start + dt.timedelta(seconds=o),
            "ingest_ts": start + dt.timedelta(seconds=o),
            "processed_ts": start + dt.timedelta(seconds=o + 1),
            "conditions": None,
            "kafka_partition": partition,
            "kafka_offset": o,
            "trade_date": day,
        }
        for o in offsets
    ]
    return pa.Table.from_pylist(rows, schema=OLD_SCHEMA)


def _put(settings: Settings, relative: str, table: pa.Table) -> None:
    path = f"{settings.s3_bucket}/{settings.lake_prefix}/{relative}"
    pq.write_table(table, path, filesystem=lake.s3_filesystem(settings))


def _folder(day: dt.date, symbol: str) -> str:
    return f"trade_date={day.isoformat()}/symbol={contracts.quote_partition_value(symbol)}"


@pytest.fixture
def old_lake(infrastructure: Settings, tmp_path: Path) -> tuple[Settings, set[tuple]]:
    """An old lake: batch files, a segment with the batch files it covers still there,
    a late batch after the segment, the older ``compacted-upto`` form, and rejects."""
    run = uuid.uuid4().hex[:8]
    settings = load_settings(
        LAKE_PREFIX=f"tests/migrate-{run}/processed_trades",
        SUMMARIES_PREFIX=f"tests/migrate-{run}/summaries",
        FINPIPE_HOME=tmp_path / "home",
        SPARK_CHECKPOINT_DIR=tmp_path / "checkpoint",
    )
    btc, brk = "BINANCE:BTCUSDT", "BRK.B"
    day1, day2 = DAYS
    # day 1, BTC: batches 0-2 folded into a segment (leftovers kept), then late batch 5
    _put(
        settings,
        f"{_folder(day1, btc)}/batch-000000000000.parquet",
        _rows(day1, btc, 0, range(0, 3)),
    )
    _put(
        settings,
        f"{_folder(day1, btc)}/batch-000000000001.parquet",
        _rows(day1, btc, 0, range(3, 5)),
    )
    _put(
        settings,
        f"{_folder(day1, btc)}/compacted-000000000000-000000000001.parquet",
        _rows(day1, btc, 0, range(0, 5)),
    )
    _put(
        settings,
        f"{_folder(day1, btc)}/batch-000000000005.parquet",
        _rows(day1, btc, 0, range(5, 7)),
    )
    # day 1, BRK.B: the older form covering batch 2, and batch 3 on top
    _put(
        settings,
        f"{_folder(day1, brk)}/compacted-upto-000000000002.parquet",
        _rows(day1, brk, 1, range(0, 4)),
    )
    _put(
        settings,
        f"{_folder(day1, brk)}/batch-000000000002.parquet",
        _rows(day1, brk, 1, range(2, 4)),
    )
    _put(
        settings,
        f"{_folder(day1, brk)}/batch-000000000003.parquet",
        _rows(day1, brk, 1, range(4, 6)),
    )
    # day 2: plain batches
    _put(
        settings,
        f"{_folder(day2, btc)}/batch-000000000006.parquet",
        _rows(day2, btc, 0, range(7, 9)),
    )
    _put(
        settings,
        f"{_folder(day2, brk)}/batch-000000000007.parquet",
        _rows(day2, brk, 1, range(6, 7)),
    )
    rejects = pa.table(
        {
            "kafka_partition": pa.array([2], pa.int32()),
            "kafka_offset": pa.array([0], pa.int64()),
            "kafka_timestamp": pa.array([0], pa.int64()).cast(OLD_TS),
            "key": ["k"],
            "value": ["{not json"],
            "reason": ["not JSON"],
            "processed_ts": pa.array([1_772_445_600_000], pa.int64()).cast(OLD_TS),
        }
    )
    _put(settings, "_rejects/batch-000000000004.parquet", rejects)
    # the summaries' old layout: one object per day, and an incremental state object
    for day in DAYS:
        bar = {
            "trade_date": day,
            "symbol": btc,
            "minute": dt.datetime.combine(day, dt.time(10), tzinfo=dt.UTC),
            **dict.fromkeys(("open", "high", "low", "close", "volume", "trade_value", "vwap"), 1.0),
            "trade_count": 3,
        }
        old_schema = pa.schema(
            [(f.name, OLD_TS if pa.types.is_timestamp(f.type) else f.type)
             for f in summaries.SCHEMAS[summaries.OHLCV_1M]]
        )  # fmt: skip
        key = f"{settings.summaries_prefix}/{summaries.OHLCV_1M}/trade_date={day}/data.parquet"
        fs = lake.s3_filesystem(settings)
        old = pa.Table.from_pylist([bar], schema=old_schema)
        pq.write_table(old, f"{settings.s3_bucket}/{key}", filesystem=fs)
    state = (
        f"{settings.s3_bucket}/{settings.summaries_prefix}/_state/trade_date={DAYS[1]}/data.parquet"
    )
    pq.write_table(pa.table({"x": [1]}), state, filesystem=lake.s3_filesystem(settings))
    expected = (
        {(btc, 0, o) for o in range(0, 7)}
        | {(brk, 1, o) for o in range(0, 6)}
        | {(btc, 0, o) for o in range(7, 9)}
        | {(brk, 1, 6)}
    )  # fmt: skip
    return settings, expected


def _coordinates(settings: Settings) -> list[tuple]:
    rows = lake.lake_dataset(settings).to_table(
        columns=["symbol", "kafka_partition", "kafka_offset"]
    )
    return sorted((r["symbol"], r["kafka_partition"], r["kafka_offset"]) for r in rows.to_pylist())


def test_every_row_of_the_old_rule_lands_once_and_the_old_objects_go(old_lake) -> None:  # type: ignore[no-untyped-def]
    settings, expected = old_lake
    problem = lake_migration.old_layout_problem(settings)
    assert problem is not None and "make migrate-lake" in problem
    with pytest.raises(LakeCheckpointMismatch, match="pre-Delta layout"):  # Spark refuses
        check_checkpoint_matches_lake(settings)

    # A first run stopped after one day; the second converts the rest, skipping it.
    first = lake_migration.migrate(settings, say=lambda _: None, stop_after_days=1)
    assert first.days == 1
    second = lake_migration.migrate(settings, say=lambda _: None)
    assert second.skipped_days == [DAYS[0].isoformat()] and second.days == 1

    coordinates = _coordinates(settings)
    assert len(coordinates) == len(set(coordinates)) == len(expected)
    assert set(coordinates) == expected
    assert [r["value"] for r in lake.rejects_dataset(settings).to_table().to_pylist()] == [
        "{not json"
    ]
    client = lake.s3_client(settings)
    assert lake_migration.old_layout_keys(settings, client) == []
    bars = summaries.read(settings, summaries.OHLCV_1M, list(DAYS)).to_pylist()
    assert sorted((b["trade_date"], b["trade_count"]) for b in bars) == [(d, 3) for d in DAYS]
    assert summaries.pre_delta_days(settings, summaries.OHLCV_1M) == []
    left = client.list_objects_v2(
        Bucket=settings.s3_bucket, Prefix=f"{settings.summaries_prefix}/_state/"
    )
    assert left.get("KeyCount", 0) == 0
    assert lake_migration.old_layout_problem(settings) is None
    # The checkpoint that wrote the old lake (planned up to batch 7) is accepted...
    offsets = settings.checkpoint_dir / "offsets"
    offsets.mkdir(parents=True)
    for batch in range(8):
        (offsets / str(batch)).write_text("v1")
    check_checkpoint_matches_lake(settings)
    snapshot = lake.trades_table(settings).open()
    assert snapshot is not None
    # ...and its next batch (8) is above the recorded transaction, so it is committed.
    assert snapshot.transaction_version(contracts.SPARK_APP_ID) == 7
    # A third run finds nothing to do.
    assert lake_migration.migrate(settings, say=lambda _: None).days == 0


def test_the_old_reading_rule() -> None:
    b = "batch-{:012d}.parquet".format
    s = "compacted-{:012d}-{:012d}.parquet".format
    assert lake_migration.visible_names([b(8), b(9), s(4, 6), b(5), s(7, 7)]) == sorted(
        [b(8), b(9), s(4, 6), s(7, 7)]
    )
    assert lake_migration.visible_names([s(4, 6), s(7, 9), s(4, 9), b(10)]) == [b(10), s(4, 9)]
    assert lake_migration.visible_names(["compacted-upto-000000000005.parquet", b(3), b(7)]) == [
        b(7),
        "compacted-upto-000000000005.parquet",
    ]
