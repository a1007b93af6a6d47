"""Today's summaries refreshed from what changed, against the day built from nothing.

Real MinIO and DuckDB: batches land over several refreshes, some with trades of minutes
that earlier batches already summarized, and a rolling compaction folds batches into
segments between refreshes. After every refresh the published tables equal, value for
value, the tables built from the whole day at once (what the close publishes).
"""

import datetime as dt

import duckdb
import pytest
from dagster import materialize

from finpipe import lake, summaries
from finpipe_dagster.definitions import defs
from finpipe_dagster.lake.rolling_compaction import roll_day
from finpipe_dagster.partitions import today_utc
from finpipe_dagster.resources import LakeS3Resource
from finpipe_dagster.summaries import incremental

from .conftest import SeededLake

daily_summaries = defs.get_assets_def(summaries.OHLCV_1M)


def published(seeded: SeededLake, day: dt.date) -> dict[str, list[dict]]:
    found = {}
    for name in summaries.NAMES:
        rows = summaries.read(seeded.settings, name, [day]).to_pylist()
        found[name] = [{k: v for k, v in r.items() if k != "computed_ts"} for r in rows]
    return found


def from_nothing(seeded: SeededLake, day: dt.date) -> dict[str, list[dict]]:
    fs = lake.s3_filesystem(seeded.settings)
    files = lake.list_lake_files(seeded.settings, [day], filesystem=fs)
    con = duckdb.connect()
    state, report = incremental.refresh(con, seeded.settings, fs, files, None)
    assert not report.incremental
    tables = incremental.published_tables(con, state, dt.datetime.now(dt.UTC))
    return {
        name: [{k: v for k, v in r.items() if k != "computed_ts"} for r in t.to_pylist()]
        for name, t in tables.items()
    }


def test_incremental_refreshes_equal_the_whole_day_exactly(
    seeded: SeededLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLING_COMPACTION_MIN_AGE_SECONDS", "0")
    monkeypatch.setenv("ROLLING_COMPACTION_SEGMENT_BATCHES", "3")
    monkeypatch.setenv("COMPACTION_GRACE_SECONDS", "0")
    settings = seeded.resource.load()
    day = today_utc()
    fs = lake.s3_filesystem(settings)
    lake_s3 = LakeS3Resource(settings=seeded.resource)
    reports = []
    for step in range(6):
        # 4 minutes of trades each time: later batches keep adding to earlier minutes
        seeded.write(seeded.trades(day, 150, seed=100 + step, minutes=4))
        seeded.write(seeded.trades(day, 60, seed=200 + step, minutes=12))
        if step % 2 == 1:
            rolled = roll_day(settings, fs, lake_s3, day)
            assert rolled.segments_written > 0
        result = materialize(
            [daily_summaries], partition_key=day.isoformat(), resources=seeded.resources
        )
        assert result.success
        state = incremental.load_state(settings, fs, day)
        assert state is not None
        reports.append(state)
        assert published(seeded, day) == from_nothing(seeded, day), f"step {step}"
    ohlcv = published(seeded, day)[summaries.OHLCV_1M]
    assert sum(b["trade_count"] for b in ohlcv) == len(seeded.rows) == 6 * 210
    # The state's watermark moved with the lake: the last refresh read only new objects.
    newest = lake.batch_ids_by_symbol(lake.list_lake_files(settings, [day]))
    assert reports[-1].watermark == newest


def test_a_refresh_reads_only_the_new_objects_and_the_minutes_they_touch(
    seeded: SeededLake,
) -> None:
    day = today_utc()
    settings = seeded.settings
    fs = lake.s3_filesystem(settings)
    for step in range(5):
        seeded.write(seeded.trades(day, 40, seed=300 + step, minutes=1))
    files = lake.list_lake_files(settings, [day], filesystem=fs)
    state, first = incremental.refresh(duckdb.connect(), settings, fs, files, None)
    assert first.objects_read == len(files) == 10
    # a new batch of trades in a minute far from the others: nothing older to re-read
    late = [
        {**row, "trade_ts": row["trade_ts"] + dt.timedelta(hours=3)}
        for row in seeded.trades(day, 10, seed=400, minutes=1)
    ]
    seeded.write(late)
    files = lake.list_lake_files(settings, [day], filesystem=fs)
    state, second = incremental.refresh(duckdb.connect(), settings, fs, files, state)
    assert second.incremental
    assert second.objects_read == len({r["symbol"] for r in late})
    assert second.minutes_rebuilt == len({r["symbol"] for r in late})
    # and one in the first minute: the older objects of that minute are read again
    seeded.write(seeded.trades(day, 10, seed=500, minutes=1))
    files = lake.list_lake_files(settings, [day], filesystem=fs)
    _, third = incremental.refresh(duckdb.connect(), settings, fs, files, state)
    assert third.objects_read == len(files) - second.objects_read
