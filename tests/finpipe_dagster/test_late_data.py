"""The late-data sensor follows the lake's log: closed days that got rows after their
summaries (or their compaction) read them are requested again; with no cursor or a lost
log it compares row counts. Pure decisions, then real MinIO, Delta and a Dagster instance."""

import datetime as dt

import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    RunRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
    instance_for_test,
)

from finpipe import lake_log
from finpipe_dagster.lake.assets import processed_trades_spec
from finpipe_dagster.lake.maintenance import compacted_trades_asset
from finpipe_dagster.partitions import daily_partitions
from finpipe_dagster.summaries.assets import daily_summaries_asset
from finpipe_dagster.summaries.jobs import close_day_job, summaries_job
from finpipe_dagster.summaries.late_data import (
    IN_STEP,
    RETRY_BACKOFF,
    Cursor,
    DayWork,
    LakeDay,
    build_late_data_summaries_sensor,
    decide,
    in_step,
    late_days,
    merge,
    run_request,
)

from .conftest import DAY, SeededLake

NOW = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
CLOSED = dt.date(2026, 3, 9)  # yesterday of NOW
SETTLE = dt.timedelta(minutes=5)


def ago(minutes: float) -> dt.datetime:
    return NOW - dt.timedelta(minutes=minutes)


def add(version: int, day: dt.date, at: dt.datetime) -> lake_log.FileAdd:
    return lake_log.FileAdd(
        version, f"trade_date={day}/symbol=X/f{version}.parquet",
        {"trade_date": day.isoformat(), "symbol": "X"}, 1, {}, {},
        int(at.timestamp() * 1000),
    )  # fmt: skip


def test_the_log_names_the_closed_days_with_the_newest_version_that_added_rows() -> None:
    adds = [
        add(4, CLOSED, ago(30)),
        add(7, CLOSED, ago(2)),
        add(5, dt.date(2026, 3, 1), ago(20)),
        add(8, NOW.date(), ago(1)),  # today: the refresh's, not late
        add(9, dt.date(2025, 1, 1), ago(1)),  # before the first partition
    ]
    found = late_days(adds, dt.date(2026, 1, 1), NOW.date())
    assert found == {
        CLOSED: LakeDay(CLOSED, 7, ago(2)),
        dt.date(2026, 3, 1): LakeDay(dt.date(2026, 3, 1), 5, ago(20)),
    }
    # what earlier ticks left pending stays, a newer version replaces an older one
    pending = {CLOSED: LakeDay(CLOSED, 3, ago(60)), DAY: LakeDay(DAY, 2, None)}
    merged = merge(pending, found)
    assert merged[CLOSED].version == 7 and merged[DAY] == pending[DAY]
    cursor = Cursor(12, "s3://warehouse/processed_trades", merged)
    assert Cursor.parse(cursor.dump()) == cursor
    assert Cursor.parse('{"storage_id": 3}') == Cursor(None, None, {})  # another cursor
    assert Cursor.parse("not json") == Cursor(None, None, {})


def test_a_day_is_in_step_when_its_summaries_and_compaction_hold_the_newest_rows() -> None:
    state = LakeDay(CLOSED, 7, ago(10))
    assert in_step(state, 7, 9)
    assert not in_step(state, 6, 9)
    assert not in_step(state, 7, 6)
    assert not in_step(state, None, 9)
    assert not in_step(state, 7, None)


def _state(version: int = 10, added_at: dt.datetime | None = None) -> LakeDay:
    return LakeDay(CLOSED, version, ago(1) if added_at is None else added_at)


@pytest.mark.parametrize(
    ("state", "summarized", "compacted", "now", "busy", "failed_at", "expected"),
    [
        # in step: nothing
        (_state(), 10, 12, NOW, False, None, None),
        # late rows after the compaction: summaries at once, compaction once settled
        (_state(), 9, 9, NOW, False, None, DayWork(CLOSED, True, False)),
        (_state(added_at=ago(6)), 10, 9, NOW, False, None, DayWork(CLOSED, False, True)),
        (_state(added_at=ago(6)), 9, 9, NOW, False, None, DayWork(CLOSED, True, True)),
        # never summarized (a replayed past day)
        (_state(), None, 12, NOW, False, None, DayWork(CLOSED, True, False)),
        # a day never compacted is the close schedule's (00:20) while its run may come...
        (_state(added_at=dt.datetime(2026, 3, 9, 23, 59, tzinfo=dt.UTC)), 10, None,
         dt.datetime(2026, 3, 10, 0, 24, tzinfo=dt.UTC), False, None, None),
        # ...and the sensor's once that passed (the close run failed, or never ran)
        (_state(added_at=ago(600)), 10, None, NOW, False, None, DayWork(CLOSED, False, True)),
        # a day found by row counts has no commit time: settled
        (LakeDay(CLOSED, 10, None), 10, 9, NOW, False, None, DayWork(CLOSED, False, True)),
        # a run of the day is queued or running: never a second one
        (_state(), 9, 12, NOW, True, None, None),
        # the day's last run failed: again, but only after the backoff
        (_state(), 9, 12, NOW, False, NOW - RETRY_BACKOFF / 2, None),
        (_state(), 9, 12, NOW, False, NOW - RETRY_BACKOFF, DayWork(CLOSED, True, False)),
    ],
)  # fmt: skip
def test_what_a_closed_day_needs(
    state: LakeDay,
    summarized: int | None,
    compacted: int | None,
    now: dt.datetime,
    busy: bool,
    failed_at: dt.datetime | None,
    expected: DayWork | None,
) -> None:
    found = decide(
        state, summarized, compacted, now=now, settle=SETTLE, busy=busy, failed_at=failed_at
    )
    assert found == expected


def test_run_requests_order_summaries_before_compaction_and_carry_retries() -> None:
    both = run_request(DayWork(CLOSED, True, True))
    assert (both.job_name, both.partition_key, both.asset_selection) == (
        "close_day_job",
        "2026-03-09",
        None,
    )
    compaction = run_request(DayWork(CLOSED, False, True))
    assert [k.to_user_string() for k in compaction.asset_selection or []] == ["compacted_trades"]
    late = run_request(DayWork(CLOSED, True, False))
    assert late.job_name == "summaries_job"
    assert late.tags["dagster/max_retries"] == "3"


# --- against the real services --------------------------------------------------------


class Sensor:
    """Ticks the sensor as the daemon does, keeping its cursor, and runs what it asks."""

    def __init__(self, seeded: SeededLake, instance: DagsterInstance) -> None:
        self.seeded, self.instance, self.cursor = seeded, instance, None
        partitions = daily_partitions(seeded.settings)
        self.defs = Definitions(
            assets=[
                processed_trades_spec(seeded.settings),
                daily_summaries_asset(partitions),
                compacted_trades_asset(partitions),
            ],
            jobs=[close_day_job, summaries_job],
            resources=seeded.resources,
        )

    def tick(self) -> SensorResult | SkipReason:
        with build_sensor_context(
            instance=self.instance, resources=self.seeded.resources, cursor=self.cursor
        ) as context:
            result = build_late_data_summaries_sensor(self.seeded.settings)(context)
            self.cursor = context.cursor
        if isinstance(result, SensorResult) and result.cursor is not None:
            self.cursor = result.cursor
        return result

    def requests(self) -> list[RunRequest]:
        result = self.tick()
        assert isinstance(result, SensorResult), result
        return list(result.run_requests or [])

    def run(self, request: RunRequest) -> None:
        job = self.defs.resolve_job_def(request.job_name or "")
        assert job.execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            tags=request.tags,
            asset_selection=request.asset_selection,
        ).success


def test_late_rows_of_a_closed_day_are_summarized_again_from_the_log(
    seeded: SeededLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = DAY + dt.timedelta(days=1)
    seeded.write(seeded.trades(DAY, 30, seed=1))
    monkeypatch.setenv("LATE_BATCH_SETTLE_SECONDS", "0")
    with instance_for_test() as instance:
        sensor = Sensor(seeded, instance)
        # no cursor: row counts; never summarized, never compacted, long closed: a close
        [close] = sensor.requests()
        assert (close.job_name, close.partition_key) == ("close_day_job", DAY.isoformat())
        assert close.asset_selection is None
        sensor.run(close)
        skip = sensor.tick()
        assert isinstance(skip, SkipReason) and IN_STEP in str(skip.skip_message), skip

        # late rows: the summaries at once; the compaction waits for them to settle
        monkeypatch.setenv("LATE_BATCH_SETTLE_SECONDS", "3600")
        seeded.write(seeded.trades(DAY, 5, seed=2))
        [late] = sensor.requests()
        assert (late.job_name, late.partition_key) == ("summaries_job", DAY.isoformat())
        sensor.run(late)
        waiting = sensor.tick()
        assert isinstance(waiting, SkipReason) and "settle" in str(waiting.skip_message)
        assert DAY in Cursor.parse(sensor.cursor).pending  # not compacted since

        # a compaction (no data change) is no news; rows of another closed day are
        snapshot = seeded.table.open()
        assert snapshot is not None
        snapshot.optimize.compact(partition_filters=[("trade_date", "=", DAY.isoformat())])
        seeded.write(seeded.trades(other, 5, seed=3))
        requests = sensor.requests()
        assert [(r.job_name, r.partition_key) for r in requests] == [
            ("summaries_job", other.isoformat())
        ]
        sensor.run(requests[0])

        # once settled: the late rows of DAY are compacted (its summaries are in step)
        monkeypatch.setenv("LATE_BATCH_SETTLE_SECONDS", "0")
        by_day = {r.partition_key: r for r in sensor.requests()}
        assert sorted(by_day) == [DAY.isoformat(), other.isoformat()]
        selection = by_day[DAY.isoformat()].asset_selection or []
        assert [k.to_user_string() for k in selection] == ["compacted_trades"]
        for request in by_day.values():
            sensor.run(request)
        skip = sensor.tick()
        assert isinstance(skip, SkipReason) and IN_STEP in str(skip.skip_message), skip
        assert Cursor.parse(sensor.cursor).pending == {}


def test_a_lost_log_falls_back_to_row_counts(
    seeded: SeededLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LATE_BATCH_SETTLE_SECONDS", "0")
    other = DAY + dt.timedelta(days=1)
    seeded.write(seeded.trades(DAY, 30, seed=1))
    with instance_for_test() as instance:
        sensor = Sensor(seeded, instance)
        for request in sensor.requests():
            sensor.run(request)
        assert isinstance(sensor.tick(), SkipReason)
        behind = Cursor.parse(sensor.cursor)
        # late rows of the other day, then the log entry that added them is gone (cleaned
        # up after a checkpoint, as the log retention does)
        version = seeded.write(seeded.trades(other, 5, seed=3))
        snapshot = seeded.table.open()
        assert snapshot is not None
        snapshot.create_checkpoint()
        seeded.table.store.delete(f"_delta_log/{version:020d}.json")
        assert lake_log.changes(seeded.table, behind.version or 0, version).truncated
        [request] = sensor.requests()
        # DAY's summaries hold as many rows as its files: in step; the other day is not
        assert request.partition_key == other.isoformat()
        assert request.job_name == "close_day_job"  # never compacted either, long closed
