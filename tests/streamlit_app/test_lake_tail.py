"""The tail's first listing of a day is bounded: a fresh process at the end of a busy day
lists the objects around the window, not the whole day, and still reads every row once."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import posixpath
import time

import pyarrow.parquet as pq
import pytest

from finpipe import contracts
from finpipe.lake import s3_filesystem
from finpipe.settings import Settings
from streamlit_app import lake_tail
from streamlit_app.lake_tail import LakeTail
from tests.streamlit_app.dashboard_seed import BTC, Trade, lake_table, unique_settings

QUIET = "AAA"  # sorts first: the first partition probed holds no recent batch
OLD_BATCHES = 150


def put_batches(settings: Settings, day: dt.date, trades: dict[int, Trade]) -> None:
    """One object per (batch id, trade), in the trade's symbol folder of ``day``."""
    fs = s3_filesystem(settings)

    def put(item: tuple[int, Trade]) -> None:
        batch_id, trade = item
        folder = contracts.partition_dir(day.isoformat(), trade.symbol)
        name = contracts.batch_file_name(batch_id)
        with fs.open_output_stream(
            f"{settings.s3_bucket}/{settings.lake_prefix}/{folder}/{name}"
        ) as out:
            pq.write_table(lake_table([trade]), out)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(put, trades.items()))


@pytest.fixture
def busy_day(
    infrastructure: Settings, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, dt.datetime, list[Trade]]:
    """Two partitions of old batch objects (BTC in every batch, a quiet symbol in every
    third); then, a moment later, three recent batches of BTC. Returns the ``now`` at which
    the window (1 minute) starts between the two: LastModified is the store's clock, so the
    old objects are made old by reading at a later ``now``, and the slack before the
    window's first batch is set to zero, which the test cannot wait for."""
    monkeypatch.setattr(lake_tail, "RECENT_SLACK", dt.timedelta(0))
    settings = unique_settings(infrastructure, "tailstart")
    window = dt.timedelta(minutes=1)
    start = dt.datetime.now(dt.UTC)
    now = start + window + lake_tail.CLOCK_SLACK + dt.timedelta(minutes=1)
    day = now.date()
    old_ts = now - dt.timedelta(minutes=100)
    for p, symbol in enumerate((QUIET, BTC)):
        every = 3 if symbol == QUIET else 1
        old = {
            n: Trade(symbol, old_ts, 10.0, 1.0, n, partition=p)
            for n in range(1, OLD_BATCHES + 1)
            if n % every == 0
        }
        put_batches(settings, day, old)
    time.sleep(1.0)  # LastModified apart from the recent ones, whatever the store's precision
    between = dt.datetime.now(dt.UTC)
    time.sleep(1.0)
    now = between + window + lake_tail.CLOCK_SLACK
    recent = [
        Trade(BTC, now - dt.timedelta(seconds=20 - i), 100.0 + i, 1.0, 500 + i) for i in range(3)
    ]
    put_batches(settings, day, {OLD_BATCHES + 1 + i: t for i, t in enumerate(recent)})
    return settings, now, recent


def test_a_fresh_tail_lists_only_the_recent_batches_of_a_busy_day(
    busy_day: tuple[Settings, dt.datetime, list[Trade]],
) -> None:
    settings, now, recent = busy_day
    tail = LakeTail(settings, minutes=1)
    table = tail.read(now)
    listed = tail.listed
    assert sorted(table["kafka_offset"].to_pylist()) == [t.offset for t in recent]
    # a binary search (~40 one-key listings per probed partition) and the recent objects,
    # instead of all 150 old objects of BTC and 50 of the quiet partition
    assert listed.keys < OLD_BATCHES, listed

    # the next refresh is incremental as before: a new batch shows once, nothing twice
    newer = Trade(BTC, now - dt.timedelta(seconds=5), 110.0, 1.0, 600)
    put_batches(settings, now.date(), {OLD_BATCHES + 10: newer})
    later = tail.read(now + dt.timedelta(seconds=1))
    assert sorted(later["kafka_offset"].to_pylist()) == [*(t.offset for t in recent), 600]


def test_the_recent_start_never_skips_a_batch_of_the_window(
    busy_day: tuple[Settings, dt.datetime, list[Trade]],
) -> None:
    """With the window reaching back over the old objects, the bounded start lists them."""
    settings, now, recent = busy_day
    tail = LakeTail(settings, minutes=120)
    table = tail.read(now + dt.timedelta(minutes=1))
    offsets = table["kafka_offset"].to_pylist()
    assert len(offsets) == OLD_BATCHES + OLD_BATCHES // 3 + len(recent)


def put_segment(
    settings: Settings, day: dt.date, first: int, last: int, trades: list[Trade]
) -> str:
    """A compacted segment of ``first..last`` holding ``trades``, as the rolling compaction
    writes it; returns its key."""
    folder = contracts.partition_dir(day.isoformat(), trades[0].symbol)
    key = f"{settings.lake_prefix}/{folder}/{contracts.compacted_segment_name(first, last)}"
    with s3_filesystem(settings).open_output_stream(f"{settings.s3_bucket}/{key}") as out:
        pq.write_table(lake_table(trades), out)
    return key


def delete(settings: Settings, key: str) -> None:
    s3_filesystem(settings).delete_file(f"{settings.s3_bucket}/{key}")


@pytest.mark.parametrize("reads", ["whole objects", "dataset scan"])
def test_the_tail_reads_rolling_segments_once_and_skips_those_written_before_the_window(
    infrastructure: Settings, monkeypatch: pytest.MonkeyPatch, reads: str
) -> None:
    """A rolling-compacted open day: an hour segment written before the window is never
    read; a segment that folds the window's batches replaces them (no row twice, none
    lost) before and after the compaction deletes them, and when it grows into a wider
    segment; only batches (never a compacted name) move the listing's watermark. Both
    ways of reading an object (small ones whole, large ones by a dataset scan) give the
    same rows."""
    monkeypatch.setattr(lake_tail, "RELIST_SECONDS", 0.0)
    if reads == "dataset scan":
        monkeypatch.setattr(lake_tail, "SMALL_OBJECT_BYTES", 0)
    settings = unique_settings(infrastructure, "tailseg")
    window = dt.timedelta(minutes=1)
    start = dt.datetime.now(dt.UTC)
    day = (start + window + lake_tail.CLOCK_SLACK + dt.timedelta(minutes=2)).date()
    old = [Trade(BTC, start - dt.timedelta(minutes=90 - i), 10.0 + i, 1.0, i) for i in range(50)]
    old_key = put_segment(settings, day, 1, 50, old)
    time.sleep(1.0)  # LastModified apart from the window's objects
    now = dt.datetime.now(dt.UTC) + window + lake_tail.CLOCK_SLACK
    recent = {
        50 + n: Trade(BTC, now - dt.timedelta(seconds=40 - n), 100.0 + n, 1.0, 500 + n)
        for n in range(1, 7)
    }
    put_batches(settings, day, recent)
    tail = LakeTail(settings, minutes=1)

    def offsets(at: dt.datetime) -> list[int]:
        return sorted(tail.read(at)["kafka_offset"].to_pylist())

    expected = sorted(t.offset for t in recent.values())
    assert offsets(now) == expected
    assert old_key not in tail._tables

    folded = put_segment(settings, day, 51, 54, [recent[n] for n in range(51, 55)])
    assert offsets(now) == expected  # batches 51..54 still there (grace): read once
    assert folded in tail._tables
    for n in range(51, 55):
        delete(settings, f"{settings.lake_prefix}/{contracts.partition_dir(day.isoformat(), BTC)}/"
               f"{contracts.batch_file_name(n)}")  # fmt: skip
    assert offsets(now) == expected

    grown = put_segment(settings, day, 51, 56, [recent[n] for n in range(51, 57)])
    assert offsets(now) == expected  # the wider segment replaces the narrower one
    assert grown in tail._tables and folded not in tail._tables
    delete(settings, folded)
    newer = Trade(BTC, now - dt.timedelta(seconds=1), 200.0, 1.0, 900)
    put_batches(settings, day, {57: newer})
    # the same ``now``: objects written within a second of the window's start stay in it
    assert offsets(now) == [*expected, 900]
    for partition in tail._partitions.values():
        assert posixpath.basename(partition.start_after).startswith("batch-")
    assert old_key not in tail._tables
    # the page's queries get one chunk, not one per object, once there are many
    assert tail.read(now)["kafka_offset"].num_chunks > 1
    monkeypatch.setattr(lake_tail, "MAX_CHUNKS", 1)
    combined = tail.read(now)
    assert combined["kafka_offset"].num_chunks == 1
    assert sorted(combined["kafka_offset"].to_pylist()) == [*expected, 900]
