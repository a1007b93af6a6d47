"""The tail follows the lake table's log: a fresh tail reads only the files of the window, a
refresh only the files added since, a compaction is no news, and a vanished file or rows
removed make it start again from a fresh snapshot. Real MinIO and Delta tables."""

from __future__ import annotations

import datetime as dt

import pytest

from finpipe import lake
from finpipe.settings import Settings
from streamlit_app import lake_tail
from streamlit_app.lake_tail import LakeTail
from tests.streamlit_app.dashboard_seed import BRK, BTC, Trade, unique_settings, write_lake

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
OLD_BATCHES = 12


def offsets(table: object) -> list[int]:
    return sorted(table["kafka_offset"].to_pylist())  # type: ignore[index]


@pytest.fixture
def lake_settings(infrastructure: Settings) -> Settings:
    return unique_settings(infrastructure, "tail")


def old_then_recent(settings: Settings, now: dt.datetime) -> list[Trade]:
    """Batches of trades 100 minutes old (two symbols), then three recent batches of BTC."""
    for n in range(OLD_BATCHES):
        ts = now - dt.timedelta(minutes=100 - n)
        write_lake(settings, [Trade(BTC, ts, 10.0, 1.0, n), Trade(BRK, ts, 5.0, 1.0, n, 1)], n)
    recent = [
        Trade(BTC, now - dt.timedelta(seconds=20 - i), 100.0 + i, 1.0, 500 + i) for i in range(3)
    ]
    for i, trade in enumerate(recent):
        write_lake(settings, [trade], OLD_BATCHES + i)
    return recent


@pytest.mark.parametrize("reads", ["whole files", "dataset scan"])
def test_a_fresh_tail_reads_the_window_then_only_what_the_log_added(
    lake_settings: Settings, monkeypatch: pytest.MonkeyPatch, reads: str
) -> None:
    settings = lake_settings
    if reads == "dataset scan":
        monkeypatch.setattr(lake_tail, "SMALL_FILE_ROWS", 0)
    recent = old_then_recent(settings, NOW)
    tail = LakeTail(settings, minutes=1)
    assert offsets(tail.read(NOW)) == [t.offset for t in recent]
    # the old files' bounds are before the window: never read
    assert (tail.stats.snapshots, tail.stats.files) == (1, len(recent))

    # a refresh with nothing new reads nothing
    assert offsets(tail.read(NOW)) == [t.offset for t in recent]
    assert (tail.stats.refreshes, tail.stats.files) == (0, len(recent))

    # a new batch: its one file, once; an old trade added meanwhile is not read
    newer = Trade(BTC, NOW - dt.timedelta(seconds=5), 110.0, 1.0, 600)
    write_lake(settings, [newer], 20)
    write_lake(settings, [Trade(BRK, NOW - dt.timedelta(hours=1), 5.0, 1.0, 99, 1)], 21)
    later = NOW + dt.timedelta(seconds=1)
    assert offsets(tail.read(later)) == [*(t.offset for t in recent), 600]
    assert (tail.stats.snapshots, tail.stats.refreshes) == (1, 1)
    assert tail.stats.files == len(recent) + 1
    assert tail.version == lake.trades_table(settings).open().version()  # type: ignore[union-attr]

    # rows older than the window drop out, and their files with them
    assert offsets(tail.read(NOW + dt.timedelta(seconds=45))) == [600]
    assert offsets(tail.read(NOW + dt.timedelta(minutes=10))) == []
    assert tail._tables == {}


def test_a_compaction_between_refreshes_is_no_news(lake_settings: Settings) -> None:
    settings = lake_settings
    recent = old_then_recent(settings, NOW)
    tail = LakeTail(settings, minutes=1)
    assert offsets(tail.read(NOW)) == [t.offset for t in recent]
    table = lake.trades_table(settings).open()
    assert table is not None
    assert table.optimize.compact()["numFilesRemoved"] > 0
    read_before = tail.stats.files
    assert offsets(tail.read(NOW)) == [t.offset for t in recent]  # no row twice
    assert tail.stats.files == read_before and tail.stats.snapshots == 1
    # a late batch after the compaction shows once
    late = Trade(BTC, NOW - dt.timedelta(seconds=30), 101.0, 1.0, 9_000)
    write_lake(settings, [late], 30)
    found = offsets(tail.read(NOW))
    assert found == sorted([*(t.offset for t in recent), 9_000])
    # a fresh tail reads the compacted file and the late one: the same rows
    assert offsets(LakeTail(settings, minutes=1).read(NOW)) == found


def test_a_vanished_file_or_removed_rows_mean_a_fresh_snapshot(lake_settings: Settings) -> None:
    settings = lake_settings
    first = [Trade(BTC, NOW - dt.timedelta(seconds=40), 100.0, 1.0, 1)]
    write_lake(settings, first, 0)
    tail = LakeTail(settings, minutes=1)
    assert offsets(tail.read(NOW)) == [1]
    # a batch lands, a compaction folds it with the first, and a vacuum deletes both
    # files before the tail reads the new one: the log names a file that is gone
    write_lake(settings, [Trade(BTC, NOW - dt.timedelta(seconds=30), 101.0, 1.0, 2)], 1)
    table = lake.trades_table(settings).open()
    assert table is not None
    table.optimize.compact()
    removed = table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    assert len(removed) == 2
    assert offsets(tail.read(NOW)) == [1, 2]
    assert tail.stats.snapshots == 2

    # a commit that removes rows: what the tail holds may be gone, it reads afresh
    table.update_incremental()
    table.delete("kafka_offset = 1")
    assert offsets(tail.read(NOW)) == [2]
    assert tail.stats.snapshots == 3


def test_no_table_yet_is_an_empty_tail_until_one_appears(lake_settings: Settings) -> None:
    settings = lake_settings
    tail = LakeTail(settings, minutes=1)
    assert tail.read(NOW).num_rows == 0 and tail.version is None
    write_lake(settings, [Trade(BTC, NOW - dt.timedelta(seconds=3), 100.0, 1.0, 7)], 0)
    assert offsets(tail.read(NOW)) == [7]


def test_a_file_straddling_the_cutoff_is_trimmed(lake_settings: Settings) -> None:
    """One micro-batch with an old and a recent trade: once the window moves past the old
    one, reads return the recent row only, and only that row stays in memory."""
    settings = lake_settings
    trades = [
        Trade(BTC, NOW - dt.timedelta(minutes=14), 100.0, 1.0, 1),
        Trade(BTC, NOW - dt.timedelta(minutes=1), 101.0, 1.0, 2),
    ]
    write_lake(settings, trades, 0)
    tail = LakeTail(settings, minutes=15)
    assert tail.read(NOW)["price"].to_pylist() == [100.0, 101.0]
    later = NOW + dt.timedelta(minutes=5)
    assert tail.read(later)["price"].to_pylist() == [101.0]
    assert tail.read(later)["price"].to_pylist() == [101.0]
    [kept] = tail._tables.values()
    assert kept.num_rows == 1
    # the boundary is inclusive: a trade exactly at the cutoff stays
    edge = NOW - dt.timedelta(minutes=1) + dt.timedelta(minutes=15)
    assert tail.read(edge)["price"].to_pylist() == [101.0]
    assert tail.read(edge + dt.timedelta(milliseconds=1)).num_rows == 0
    assert tail._tables == {}
