"""Today's summaries refreshed from what changed, against the day built from nothing.

Real MinIO, Delta tables and DuckDB: batches land over several refreshes, some with trades
of minutes that earlier batches already summarized; compactions fold files between
refreshes, and a delete removes rows. After every refresh the published tables equal,
value for value, the tables built from the whole day at once (what the close publishes).
"""

import datetime as dt
from pathlib import Path

import duckdb
from dagster import materialize

from finpipe import lake, lake_log, summaries
from finpipe_dagster.definitions import defs
from finpipe_dagster.partitions import today_utc
from finpipe_dagster.summaries import incremental

from .conftest import SYMBOLS, SeededLake

daily_summaries = defs.get_assets_def(summaries.OHLCV_1M)


def without_computed_ts(tables: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {
        name: [{k: v for k, v in r.items() if k != "computed_ts"} for r in rows]
        for name, rows in tables.items()
    }


def published(seeded: SeededLake, day: dt.date) -> dict[str, list[dict]]:
    return without_computed_ts(
        {name: summaries.read(seeded.settings, name, [day]).to_pylist() for name in summaries.NAMES}
    )


def from_nothing(seeded: SeededLake, day: dt.date) -> dict[str, list[dict]]:
    con = duckdb.connect()
    state, report = incremental.refresh(con, seeded.settings, seeded.table.open(), day, None)
    assert not report.incremental
    tables = incremental.published_tables(con, state, dt.datetime.now(dt.UTC))
    return without_computed_ts({name: t.to_pylist() for name, t in tables.items()})


def test_incremental_refreshes_equal_the_whole_day_exactly(seeded: SeededLake) -> None:
    settings = seeded.settings
    day = today_utc()
    store = seeded.lake_tables.store()  # where the run keeps the day's state
    deleted = 0
    reports = []
    for step in range(6):
        # 4 minutes of trades each time: later batches keep adding to earlier minutes
        seeded.write(seeded.trades(day, 150, seed=100 + step, minutes=4))
        seeded.write(seeded.trades(day, 60, seed=200 + step, minutes=12))
        snapshot = seeded.table.open()
        assert snapshot is not None
        if step % 2 == 1:
            # the rows of earlier batches move into other files (dataChange=false)
            metrics = snapshot.optimize.compact()
            assert metrics["numFilesRemoved"] > 0
        if step == 4:
            # a commit that removes rows: the refresh rebuilds the day
            snapshot.delete("kafka_offset < 5")
            deleted = sum(r["kafka_offset"] < 5 for r in seeded.rows)
        previous = incremental.load_state(settings, store, day)
        if previous is not None:
            # what the run does, seen from here: incremental unless rows were removed
            _, report = incremental.refresh(
                duckdb.connect(), settings, seeded.table.open(), day, previous
            )
            assert report.incremental == (step != 4), (step, report)
            assert report.files_added == (0 if step == 4 else 2 * len(SYMBOLS)), step
        result = materialize(
            [daily_summaries], partition_key=day.isoformat(), resources=seeded.resources
        )
        assert result.success
        state = incremental.load_state(settings, store, day)
        assert state is not None
        if previous is not None:
            found = lake_log.changes(seeded.table, previous.version, state.version)
            reports.append((step, found.removed_data))
        assert state.version == seeded.table.open().version(), f"step {step}"  # type: ignore[union-attr]
        assert published(seeded, day) == from_nothing(seeded, day), f"step {step}"
        # what the materialization records for the late-data sensor
        event = result.asset_materializations_for_node(daily_summaries.node_def.name)[0]
        assert event.metadata["lake_version"].value == {day.isoformat(): state.version}
        assert event.metadata["lake_rows"].value == {day.isoformat(): state.rows}
    ohlcv = published(seeded, day)[summaries.OHLCV_1M]
    assert deleted > 0
    assert sum(b["trade_count"] for b in ohlcv) == len(seeded.rows) - deleted == 6 * 210 - deleted
    assert (4, True) in reports  # the delete was seen as rows removed


def test_a_refresh_reads_only_the_new_files_and_the_minutes_they_touch(
    seeded: SeededLake,
) -> None:
    day = today_utc()
    settings = seeded.settings
    for step in range(5):
        seeded.write(seeded.trades(day, 40, seed=300 + step, minutes=1))

    def refresh(state: incremental.DayState | None) -> tuple[incremental.DayState, object]:
        return incremental.refresh(duckdb.connect(), settings, seeded.table.open(), day, state)

    state, first = refresh(None)
    files = lake.table_files(seeded.table.open(), [day])
    assert first.files_read == len(files) == 10 and not first.incremental
    # nothing new: nothing read
    state, idle = refresh(state)
    assert (idle.files_read, idle.rows_read, idle.minutes_rebuilt) == (0, 0, 0)
    # a new batch of trades in a minute far from the others: nothing older to re-read
    late = [
        {**row, "trade_ts": row["trade_ts"] + dt.timedelta(hours=3)}
        for row in seeded.trades(day, 10, seed=400, minutes=1)
    ]
    seeded.write(late)
    state, second = refresh(state)
    symbols = len({r["symbol"] for r in late})
    assert second.incremental
    assert second.files_added == second.files_read == symbols
    assert second.rows_read == len(late)
    assert second.minutes_rebuilt == symbols
    # one in the first minute: the older files of that minute are read again
    seeded.write(seeded.trades(day, 10, seed=500, minutes=1))
    state, third = refresh(state)
    files = lake.table_files(seeded.table.open(), [day])
    assert third.files_read == len(files) - second.files_read
    # a compaction folds every file: no data change, nothing read, the watermark moves
    snapshot = seeded.table.open()
    assert snapshot is not None
    snapshot.optimize.compact()
    snapshot.update_incremental()
    state, after = refresh(state)
    assert (after.files_added, after.files_read) == (0, 0)
    assert state.version == snapshot.version()
    # the next batch in the first minute reads the compacted file that now holds its rows
    seeded.write(seeded.trades(day, 5, seed=600, minutes=1))
    state, compacted = refresh(state)
    assert compacted.incremental and compacted.files_added >= 1
    assert compacted.rows_read == sum(
        1 for r in seeded.rows if r["trade_ts"] < dt.datetime.combine(day, dt.time(10, 1), dt.UTC)
    )
    assert state.rows == len(seeded.rows)


def test_a_state_of_a_lost_log_or_another_lake_is_rebuilt(
    seeded: SeededLake, tmp_path: Path
) -> None:
    day = today_utc()
    settings = seeded.settings
    seeded.write(seeded.trades(day, 30, seed=700, minutes=2))
    state, _ = incremental.refresh(duckdb.connect(), settings, seeded.table.open(), day, None)
    seeded.write(seeded.trades(day, 30, seed=701, minutes=2))
    snapshot = seeded.table.open()
    # the log of the versions since the state is gone (retention): the snapshot decides
    elsewhere = lake.local_table(tmp_path)  # a store without those log entries
    gone, report = incremental.refresh(
        duckdb.connect(), settings, snapshot, day, state, table=elsewhere
    )
    assert not report.incremental and report.reason == "log entries gone"
    assert gone.rows == len(seeded.rows) == 60
    other = incremental.DayState(state.bars, state.version, "s3://elsewhere/processed_trades")
    rebuilt, report = incremental.refresh(duckdb.connect(), settings, snapshot, day, other)
    assert not report.incremental and rebuilt.rows == 60
    assert rebuilt.bars.equals(gone.bars)
