"""Maintenance of the Delta lake on the real MinIO: the closed day's z-order
(``compacted_trades``), the open day's compaction, the lite vacuum, and what a reader
holding an older snapshot sees meanwhile."""

import threading
from collections import Counter

import pyarrow.compute as pc
import pytest
from dagster import Failure, execute_job, instance_for_test, materialize
from dagster._core.definitions.reconstruct import ReconstructableRepository

from finpipe import lake, lake_log
from finpipe_dagster.definitions import defs
from finpipe_dagster.instance import MAINTENANCE_POOL, MAINTENANCE_TAG
from finpipe_dagster.partitions import today_utc
from finpipe_dagster.resources.finpipe_settings import environment_overrides

from .conftest import DAY, SeededLake
from .test_close_day_drill import step_times

compacted_trades = defs.get_assets_def("compacted_trades")


def coordinates(seeded: SeededLake, day: object = DAY) -> Counter:
    table = lake.lake_dataset(seeded.settings, [day]).to_table()  # type: ignore[list-item]
    columns = (table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist())
    return Counter(zip(*columns, strict=True))


def expected(seeded: SeededLake) -> Counter:
    return Counter((r["kafka_partition"], r["kafka_offset"]) for r in seeded.rows)


def files_per_symbol(seeded: SeededLake, day: object = DAY) -> Counter:
    snapshot = seeded.table.open()
    return Counter(f.symbol for f in lake.table_files(snapshot, [day]))  # type: ignore[list-item]


def without_retention(seeded: SeededLake) -> None:
    """Replaced files may go at once (the table property the lite vacuum obeys)."""
    snapshot = seeded.table.open()
    assert snapshot is not None
    snapshot.alter.set_table_properties(
        {"delta.deletedFileRetentionDuration": "interval 0 seconds"}
    )


def test_a_closed_day_is_z_ordered_into_one_file_per_symbol_and_no_row_is_news(
    seeded: SeededLake,
) -> None:
    for seed in range(3):
        seeded.write(seeded.trades(DAY, 40, seed=20 + seed))
    before = seeded.table.open()
    assert before is not None and files_per_symbol(seeded) == {
        s: 3 for s in files_per_symbol(seeded)
    }

    result = materialize(
        [compacted_trades], partition_key=DAY.isoformat(), resources=seeded.resources
    )
    assert result.success
    metadata = result.asset_materializations_for_node("compacted_trades")[0].metadata
    assert (metadata["files_before"].value, metadata["files_after"].value) == (6, 2)
    assert metadata["rows"].value == 120
    assert set(files_per_symbol(seeded).values()) == {1}
    assert coordinates(seeded) == expected(seeded)
    # sorted by trade time within each file
    table = lake.lake_dataset(seeded.settings, [DAY]).to_table()
    for symbol in {r["symbol"] for r in seeded.rows}:
        times = table.filter(pc.equal(table["symbol"], symbol))["trade_ts"].to_pylist()
        assert times == sorted(times)
    # the compaction's commit adds no rows for the readers that follow the log
    after = seeded.table.open()
    assert after is not None and after.version() > before.version()
    found = lake_log.changes(seeded.table, before.version(), after.version())
    assert found.adds == [] and not found.removed_data

    # A late batch after the compaction is visible at once; the next run folds it in.
    seeded.write(seeded.trades(DAY, 7, seed=30))
    assert coordinates(seeded) == expected(seeded)
    assert materialize(
        [compacted_trades], partition_key=DAY.isoformat(), resources=seeded.resources
    ).success
    assert set(files_per_symbol(seeded).values()) == {1}
    assert coordinates(seeded) == expected(seeded)


def test_compaction_refuses_the_open_day(seeded: SeededLake) -> None:
    with pytest.raises(Failure, match="open day"):
        materialize(
            [compacted_trades], partition_key=today_utc().isoformat(), resources=seeded.resources
        )


def test_the_open_day_is_compacted_and_replaced_files_outlive_the_retention(
    seeded: SeededLake,
) -> None:
    day = today_utc()
    for seed in range(4):
        seeded.write(seeded.trades(day, 25, seed=40 + seed))
    held = lake.lake_dataset(seeded.settings, [day])  # a reader's snapshot, held
    maintenance = defs.resolve_job_def("lake_maintenance_job")
    assert maintenance.tags[MAINTENANCE_TAG]

    result = maintenance.execute_in_process(resources=seeded.resources)
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata  # type: ignore[union-attr]
    assert metadata["files_compacted"].value == 8  # 4 batches x 2 symbols
    assert set(files_per_symbol(seeded, day).values()) == {1}  # 4 small files -> 1
    assert coordinates(seeded, day) == expected(seeded)
    # within the retention (an hour): the vacuum kept what the held snapshot names
    assert held.to_table().num_rows == len(seeded.rows)

    # a day later, as it were: the next run's vacuum deletes the replaced files, and the
    # held snapshot's reader reloads once and reads every row once
    without_retention(seeded)
    seeded.write(seeded.trades(day, 5, seed=50))
    assert maintenance.execute_in_process(resources=seeded.resources).success
    with pytest.raises(Exception) as gone:
        held.to_table()
    assert lake.object_vanished(gone.value)
    attempts = []

    def read() -> Counter:
        dataset = held if not attempts else lake.lake_dataset(seeded.settings, [day])
        attempts.append(1)
        table = dataset.to_table(columns=["kafka_partition", "kafka_offset"])
        columns = (table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist())
        return Counter(zip(*columns, strict=True))

    assert lake.read_reloading(read) == expected(seeded)
    assert len(attempts) == 2


def test_every_maintenance_commit_runs_in_the_pool_of_one() -> None:
    """Two concurrent compactions of a partition double its rows in deltalake 1.6.6:
    the asset and the op that commit maintenance share the pool the instance limits to
    one slot, and the job carries the tag the run queue admits one at a time."""
    assert compacted_trades.op.pool == MAINTENANCE_POOL
    job = defs.resolve_job_def("lake_maintenance_job")
    assert [node.definition.pool for node in job.nodes] == [MAINTENANCE_POOL]
    assert job.tags[MAINTENANCE_TAG] == "lake"


def test_two_maintenance_runs_at_once_never_overlap_and_double_nothing(
    seeded: SeededLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drill of the hazard: two ``lake_maintenance_job`` runs submitted at the same
    moment, each step in its own process as the daemon runs them, on an instance with the
    generated pool limit. Their compacting steps never overlap, and the open day holds
    each Kafka record exactly once (two compactions from one snapshot would double it)."""
    day = today_utc()
    for seed in range(6):
        seeded.write(seeded.trades(day, 30, seed=70 + seed))
    for name, value in environment_overrides(seeded.resource).items():
        monkeypatch.setenv(name, value)
    repository = ReconstructableRepository.for_module("finpipe_dagster.definitions", "defs")
    job = repository.get_reconstructable_job("lake_maintenance_job")
    pools = {"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}}}
    with instance_for_test(overrides=pools) as instance:
        results: list = []
        start = threading.Barrier(2)

        def run() -> None:
            start.wait()
            results.append(execute_job(job, instance, raise_on_error=True))

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        assert len(results) == 2 and all(r.success for r in results)
        spans = sorted(
            span for result in results for span in step_times(instance, result.run_id).values()
        )
    assert len(spans) == 2
    (_, first_end), (second_start, _) = spans
    assert second_start >= first_end, f"two maintenance steps overlapped: {spans}"
    assert coordinates(seeded, day) == expected(seeded)
    assert set(files_per_symbol(seeded, day).values()) == {1}
