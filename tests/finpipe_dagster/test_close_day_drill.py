"""Closing a day of the Delta lake while readers scan it and late batches land, on MinIO,
DuckDB and a real Dagster instance (the close with the multiprocess executor, then the
maintenance job's vacuum); and the reader's reload when a file of its snapshot vanished.

Batches are committed as the Spark query commits them (``SeededLake.write``: one commit
per batch with the query's app transaction); no Spark runs. The table's
``delta.deletedFileRetentionDuration`` is set to zero, so the vacuum deletes replaced files
at once: the worst case for a reader holding a snapshot.
"""

import threading
import time
from collections.abc import Callable

import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    execute_job,
    instance_for_test,
    materialize,
)
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.job_execution_result import JobExecutionResult

from finpipe import lake
from finpipe.settings import Settings
from finpipe_dagster.lake.assets import processed_trades_spec, stock_ticks_spec
from finpipe_dagster.lake.maintenance import (
    compacted_trades_asset,
    lake_maintenance_job,
    vacuum,
    z_order_day,
)
from finpipe_dagster.partitions import daily_partitions
from finpipe_dagster.resources.finpipe_settings import environment_overrides
from finpipe_dagster.summaries.assets import daily_summaries_asset

from .conftest import DAY, SeededLake

pytestmark = pytest.mark.e2e
Key = tuple[int, int]


def keys(rows: list[dict]) -> set[Key]:
    return {(r["kafka_partition"], r["kafka_offset"]) for r in rows}


def scan(settings: Settings) -> list[Key]:
    """What a project reader of the day sees: one snapshot, scanned by DuckDB."""
    con = lake.duckdb_with_lake(settings, [DAY])
    try:
        return con.sql("SELECT kafka_partition, kafka_offset FROM processed_trades").fetchall()
    finally:
        con.close()


def without_retention(seeded: SeededLake) -> None:
    snapshot = seeded.table.ensure()
    snapshot.alter.set_table_properties(
        {"delta.deletedFileRetentionDuration": "interval 0 seconds"}
    )


def files_per_symbol(seeded: SeededLake) -> dict[str, int]:
    found: dict[str, int] = {}
    for file in lake.table_files(seeded.table.open(), [DAY]):
        found[file.symbol] = found.get(file.symbol, 0) + 1
    return found


def test_a_reader_reloads_once_when_a_vacuum_deleted_its_snapshots_files(
    seeded: SeededLake,
) -> None:
    for seed in range(3):
        seeded.write(seeded.trades(DAY, 40, seed=seed))
    without_retention(seeded)
    attempts = []

    def read() -> list[Key]:
        con = lake.duckdb_with_lake(seeded.settings, [DAY])  # the snapshot is taken here
        if not attempts:  # between this reader's snapshot and its scan
            table = seeded.table.open()
            assert table is not None
            assert z_order_day(table, DAY).files_removed == 6
            assert len(vacuum(table)) == 6
        attempts.append(1)
        try:
            return con.sql("SELECT kafka_partition, kafka_offset FROM processed_trades").fetchall()
        finally:
            con.close()

    rows = lake.read_reloading(read)
    assert len(attempts) == 2
    assert sorted(rows) == sorted(keys(seeded.rows))


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
                self.reads.append(lake.read_reloading(attempt, what="drill reader"))
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


def compacted_once(seeded: SeededLake) -> bool:
    """The table's history holds a maintenance commit (the close's z-order)."""
    snapshot = seeded.table.open()
    return snapshot is not None and any(
        "finpipe.maintenance" in entry for entry in snapshot.history(20)
    )


def test_closing_a_day_while_readers_scan_it_and_late_batches_land(
    seeded: SeededLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    for seed in range(12):
        seeded.write(seeded.trades(DAY, 50, seed=100 + seed))
    without_retention(seeded)
    initial = keys(seeded.rows)
    late_1, late_2 = seeded.trades(DAY, 9, seed=200), seeded.trades(DAY, 7, seed=201)
    everything = initial | keys(late_1) | keys(late_2)
    reader = Reader(seeded.settings)
    reader.start()
    try:
        with instance_for_test() as instance:
            # One late batch lands while the close runs, the next after its compaction.
            landed = [
                when(lambda: len(reader.reads) >= 3, lambda: seeded.write(late_1), 120),
                when(lambda: compacted_once(seeded), lambda: seeded.write(late_2), 120),
            ]
            close = close_with_the_multiprocess_executor(instance, seeded, monkeypatch)
            for thread in landed:
                thread.join(130)
            assert close.success
            steps = step_times(instance, close.run_id)
            assert steps["compacted_trades"][0] >= steps["daily_summaries"][1]
            # The maintenance job deletes the files the close replaced (no retention here)
            # while the reader scans; then the day is compacted again with the late rows.
            maintenance = lake_maintenance_job.execute_in_process(
                instance=instance, resources=seeded.resources
            )
            assert maintenance.success
            defs = Definitions(assets=location_assets(seeded.settings), resources=seeded.resources)
            assert materialize(
                [defs.get_assets_def("compacted_trades")],
                instance=instance,
                partition_key=DAY.isoformat(),
                resources=seeded.resources,
            ).success
            assert lake_maintenance_job.execute_in_process(
                instance=instance, resources=seeded.resources
            ).success
            time.sleep(0.5)  # a few more reads of the final state
    finally:
        reader.stop.set()
        reader.join(60)

    assert reader.errors == []
    assert len(reader.reads) >= 10, len(reader.reads)
    for seen in reader.reads:
        assert len(seen) == len(set(seen)), "a read saw a row twice"
        assert initial <= set(seen) <= everything
    assert sorted(scan(seeded.settings)) == sorted(everything)
    assert set(files_per_symbol(seeded).values()) == {1}
    print(f"drill: {len(reader.reads)} reads ({reader.attempts - len(reader.reads)} reloaded)")


def location_assets(settings: Settings) -> list[object]:
    """The code location's lake and summary assets, over its daily partitions."""
    partitions = daily_partitions(settings)
    return [
        stock_ticks_spec(settings),
        processed_trades_spec(settings),
        daily_summaries_asset(partitions),
        compacted_trades_asset(partitions),
    ]


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
            and event.event_type_value in ("STEP_START", "STEP_SUCCESS")
        ):
            found.setdefault(event.step_key, []).append(entry.timestamp)
    return {key: (times[0], times[-1]) for key, times in found.items()}
