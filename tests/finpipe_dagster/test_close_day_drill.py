"""Closing a day while readers scan it and late batches land, on MinIO, DuckDB and a real
Dagster instance (the close with the multiprocess executor); and the readers' retry when
an object vanished under them.

The objects are written exactly as the Spark sink names them (``SeededLake.write``:
``trade_date=…/symbol=…/batch-<id>.parquet``, one per symbol and batch); no Spark runs.
Grace and settle periods are shortened through their settings.
"""

import datetime as dt
import threading
import time
from collections.abc import Callable

import pyarrow.fs as pafs
import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    RunRequest,
    SensorResult,
    SkipReason,
    build_sensor_context,
    execute_job,
    instance_for_test,
    materialize,
)
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from finpipe import lake, summaries
from finpipe.settings import Settings
from finpipe_dagster.lake.assets import processed_trades_spec, stock_ticks_spec
from finpipe_dagster.lake.compaction import compact_day, compacted_trades_asset, partition_files
from finpipe_dagster.partitions import daily_partitions, today_utc
from finpipe_dagster.resources import LakeS3Resource
from finpipe_dagster.resources.finpipe_settings import environment_overrides
from finpipe_dagster.summaries.assets import daily_summaries_asset
from finpipe_dagster.summaries.jobs import close_day_job, summaries_job
from finpipe_dagster.summaries.late_data import (
    IN_STEP,
    RETRY_BACKOFF,
    DayWork,
    build_late_data_summaries_sensor,
    closed_lake_days,
    day_runs,
    decide,
    summarized_batch_ids,
)
from streamlit_app.lake_tail import LakeTail

from .conftest import DAY, SeededLake

pytestmark = pytest.mark.e2e
Key = tuple[int, int]


def keys(rows: list[dict]) -> set[Key]:
    return {(r["kafka_partition"], r["kafka_offset"]) for r in rows}


def scan(settings: Settings) -> list[Key]:
    """What a project reader of the day sees: the shared listing, scanned by DuckDB."""
    con = lake.duckdb_with_lake(settings, [DAY])
    try:
        return con.sql("SELECT kafka_partition, kafka_offset FROM processed_trades").fetchall()
    finally:
        con.close()


def without_grace(seeded: SeededLake) -> Settings:
    return seeded.settings.model_copy(update={"compaction_grace_seconds": 0})


def location_assets(settings: Settings) -> list[object]:
    """The code location's lake and summary assets, over its daily partitions."""
    partitions = daily_partitions(settings)
    return [
        stock_ticks_spec(settings),
        processed_trades_spec(settings),
        daily_summaries_asset(partitions),
        compacted_trades_asset(partitions),
    ]


def test_a_reader_lists_again_when_a_compaction_deleted_what_it_listed(
    seeded: SeededLake,
) -> None:
    for seed in range(3):
        seeded.write(seeded.trades(DAY, 40, seed=seed))
    fs = lake.s3_filesystem(seeded.settings)
    attempts = []

    def read() -> list[Key]:
        con = lake.duckdb_with_lake(seeded.settings, [DAY])
        if not attempts:  # between this reader's listing and its scan
            compact_day(without_grace(seeded), fs, LakeS3Resource(settings=seeded.resource), DAY)
        attempts.append(1)
        try:
            return con.sql("SELECT kafka_partition, kafka_offset FROM processed_trades").fetchall()
        finally:
            con.close()

    rows = lake.read_relisting(read)
    assert len(attempts) == 2
    assert sorted(rows) == sorted(keys(seeded.rows))


def test_the_dashboard_tail_lists_again_when_an_object_vanished(seeded: SeededLake) -> None:
    now = dt.datetime.now(dt.UTC)
    recent = []
    for i, row in enumerate(seeded.trades(today_utc(), 30, seed=7)):
        ts = now - dt.timedelta(seconds=30 + i)
        recent.append({**row, "trade_ts": ts, "trade_date": ts.date()})
    for start in (0, 15):
        seeded.write(recent[start : start + 15])
    tail = LakeTail(seeded.settings, minutes=5)
    listed = tail._refresh_listing
    compacted = []

    def listing_then_compaction(cutoff: dt.datetime, at: dt.datetime) -> set[str]:
        wanted = listed(cutoff, at)
        if not compacted:  # the objects just listed go before the tail reads them
            for day in {r["trade_date"] for r in recent}:
                resource = LakeS3Resource(settings=seeded.resource)
                fs = lake.s3_filesystem(seeded.settings)
                compacted.append(compact_day(without_grace(seeded), fs, resource, day))
        return wanted

    tail._refresh_listing = listing_then_compaction  # type: ignore[method-assign]
    table = tail.read(now)
    assert compacted and sum(c.leftovers_deleted for c in compacted) >= 2
    columns = (table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist())
    found = list(zip(*columns, strict=True))
    assert sorted(found) == sorted(keys(recent))


class Reader(threading.Thread):
    """Scans the day in a loop through the project's reader; keeps what each read saw."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.stop = threading.Event()
        self.reads: list[list[Key]] = []
        self.attempts = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        def attempt() -> list[Key]:
            self.attempts += 1
            return scan(self.settings)

        while not self.stop.is_set():
            try:
                self.reads.append(lake.read_relisting(attempt, what="drill reader"))
            except Exception as error:  # the drill's verdict: there must be none
                self.errors.append(error)
            time.sleep(0.02)


def when(
    condition: Callable[[], bool], then: Callable[[], None], timeout: float
) -> threading.Thread:
    def wait_then() -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        then()

    thread = threading.Thread(target=wait_then, daemon=True)
    thread.start()
    return thread


def tick(instance: DagsterInstance, seeded: SeededLake) -> SensorResult | SkipReason:
    """A tick with no cursor and no Spark heartbeat: as after a restart of everything."""
    with build_sensor_context(instance=instance, resources=seeded.resources) as context:
        return build_late_data_summaries_sensor(seeded.settings)(context)


def test_closing_a_day_while_a_reader_scans_it_and_late_batches_land(
    seeded: SeededLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPACTION_GRACE_SECONDS", "4")
    monkeypatch.setenv("LATE_BATCH_SETTLE_SECONDS", "2")
    for seed in range(12):
        seeded.write(seeded.trades(DAY, 50, seed=100 + seed))
    initial = keys(seeded.rows)
    late_1, late_2 = seeded.trades(DAY, 9, seed=200), seeded.trades(DAY, 7, seed=201)
    everything = initial | keys(late_1) | keys(late_2)
    fs = lake.s3_filesystem(seeded.settings)

    def only_compacted(fs: pafs.FileSystem) -> bool:
        folders = partition_files(fs, seeded.settings, DAY).values()
        return all(len(p) == 1 and "compacted-upto-" in p[0] for p in folders)

    def stats_published() -> bool:
        delta = summaries.open_table(seeded.settings, summaries.DAILY_SYMBOL_STATS)
        return delta is not None and DAY in summaries.published_days(delta)

    def compacted_exists() -> bool:
        return any(
            "compacted-upto-" in p
            for ps in partition_files(fs, seeded.settings, DAY).values()
            for p in ps
        )

    defs = Definitions(
        assets=location_assets(seeded.settings),
        jobs=[summaries_job, close_day_job],
        resources=seeded.resources,
    )
    reader = Reader(seeded.settings)
    reader.start()
    try:
        with instance_for_test() as instance:
            # One late batch lands between the summaries and the compaction, the next
            # after the compaction listed the day (it is in neither).
            landed = [
                when(stats_published, lambda: seeded.write(late_1), 120),
                when(compacted_exists, lambda: seeded.write(late_2), 120),
            ]
            close = close_with_the_multiprocess_executor(instance, seeded, monkeypatch)
            for thread in landed:
                thread.join(130)
            assert close.success
            steps = step_times(instance, close.run_id)
            assert steps["compacted_trades"][0] >= steps["daily_summaries"][1]
            [compaction] = close.asset_materializations_for_node("compacted_trades")
            assert compaction.metadata["leftovers_deleted"].value == 0  # inside their grace
            assert compaction.metadata["leftovers_kept"].value >= 24  # 12 batches x 2 symbols
            requests = run_until_in_step(instance, seeded, defs, lambda: only_compacted(fs))
    finally:
        reader.stop.set()
        reader.join(60)

    assert reader.errors == []
    assert len(reader.reads) >= 10, len(reader.reads)
    for seen in reader.reads:
        assert len(seen) == len(set(seen)), "a read saw a row twice"
        assert initial <= set(seen) <= everything
    # The sensor asked for the summaries (late batches), then for a compaction of them.
    assert any(r.partition_key == DAY.isoformat() for r in requests)
    assert any(r.job_name == "close_day_job" for r in requests), requests
    stats = summaries.read(seeded.settings, summaries.DAILY_SYMBOL_STATS, [DAY])
    assert sum(stats["trade_count"].to_pylist()) == len(everything)
    assert only_compacted(fs)  # the replaced objects went once their grace was over
    assert sorted(scan(seeded.settings)) == sorted(everything)
    asked = [(r.job_name, r.tags.get("finpipe/summaries")) for r in requests]
    print(
        f"drill: {len(reader.reads)} reads ({reader.attempts - len(reader.reads)} re-listed), "
        f"sensor requests: {asked}"
    )


def close_with_the_multiprocess_executor(
    instance: DagsterInstance, seeded: SeededLake, monkeypatch: pytest.MonkeyPatch
) -> JobExecutionResult:
    """``close_day_job`` of the real code location, each step in its own process (as the
    daemon runs it); the steps read the test's prefixes from the environment."""
    for name, value in environment_overrides(seeded.resource).items():
        monkeypatch.setenv(name, value)
    repository = ReconstructableRepository.for_module("finpipe_dagster.definitions", "defs")
    return execute_job(
        repository.get_reconstructable_job("close_day_job"),
        instance,
        tags={"dagster/partition": DAY.isoformat()},
        raise_on_error=True,
    )


def step_times(instance: DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """Step key -> (start, success) timestamps, from the run's event log."""
    found: dict[str, list[float]] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if (
            event is not None
            and event.step_key
            and event.event_type_value
            in (
                "STEP_START",
                "STEP_SUCCESS",
            )
        ):
            found.setdefault(event.step_key, []).append(entry.timestamp)
    return {key: (times[0], times[-1]) for key, times in found.items()}


def run_until_in_step(
    instance: DagsterInstance,
    seeded: SeededLake,
    defs: Definitions,
    done: Callable[[], bool],
    timeout: float = 90,
) -> list[RunRequest]:
    """Tick the late-data sensor and run what it requests, as the daemon would, until it
    finds the day in step with the lake and ``done()``."""
    requests: list[RunRequest] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = tick(instance, seeded)
        if isinstance(result, SkipReason):
            if str(result.skip_message).endswith(IN_STEP) and done():
                return requests
        else:
            for request in result.run_requests or []:
                requests.append(request)
                job = defs.resolve_job_def(request.job_name or "")
                assert job.execute_in_process(
                    instance=instance,
                    partition_key=request.partition_key,
                    tags=request.tags,
                    asset_selection=request.asset_selection,
                ).success
        time.sleep(1)
    raise AssertionError(f"the day never came in step with the lake; requested {requests}")


def test_a_failed_close_is_requested_again_after_the_backoff_not_before(
    seeded: SeededLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded.write(seeded.trades(DAY, 20, seed=300))
    defs = Definitions(
        assets=location_assets(seeded.settings),
        jobs=[close_day_job],
        resources=seeded.resources,
    )
    with instance_for_test() as instance:
        with monkeypatch.context() as broken:
            broken.setenv("S3_BUCKET", "finpipe-no-such-bucket")  # nowhere to publish
            failed = defs.resolve_job_def("close_day_job").execute_in_process(
                instance=instance, partition_key=DAY.isoformat(), raise_on_error=False
            )
        assert not failed.success
        skip = tick(instance, seeded)
        assert isinstance(skip, SkipReason), skip  # failed a moment ago: backoff

        now = dt.datetime.now(dt.UTC)
        busy, failed_at = day_runs(instance, now - RETRY_BACKOFF)
        assert DAY.isoformat() not in busy and DAY.isoformat() in failed_at
        [state] = closed_lake_days(seeded.settings, now)
        summarized = summarized_batch_ids(instance, [DAY.isoformat()], seeded.settings.lake_uri)
        assert summarized == {DAY.isoformat(): None}
        later = failed_at[DAY.isoformat()] + RETRY_BACKOFF
        work = decide(
            state,
            summarized[DAY.isoformat()],
            now=max(later, now),
            settle=dt.timedelta(seconds=seeded.settings.late_batch_settle_seconds),
            busy=False,
            failed_at=failed_at[DAY.isoformat()],
        )
        assert work == DayWork(DAY, summaries=True, compaction=True)


def test_a_backfill_of_several_days_records_what_it_read_of_each(seeded: SeededLake) -> None:
    days = [DAY, DAY + dt.timedelta(days=1)]
    for day in days:
        seeded.write(seeded.trades(day, 20, seed=400))
    seeded.write(seeded.trades(DAY, 5, seed=401))  # one more batch for the first day
    with instance_for_test() as instance:
        assert materialize(
            [daily_summaries_asset(daily_partitions(seeded.settings))],
            instance=instance,
            resources=seeded.resources,
            tags={
                ASSET_PARTITION_RANGE_START_TAG: days[0].isoformat(),
                ASSET_PARTITION_RANGE_END_TAG: days[-1].isoformat(),
            },
        ).success
        found = summarized_batch_ids(
            instance, [d.isoformat() for d in days], seeded.settings.lake_uri
        )
        elsewhere = summarized_batch_ids(instance, [DAY.isoformat()], "s3://warehouse/other")
    states = {
        s.day: s.batch_ids for s in closed_lake_days(seeded.settings, dt.datetime.now(dt.UTC))
    }
    assert found == {d.isoformat(): states[d] for d in days}
    assert found[DAY.isoformat()] == {"AAPL": 2, "BINANCE:BTCUSDT": 2}
    assert elsewhere == {DAY.isoformat(): None}  # batch ids of another lake are no evidence
