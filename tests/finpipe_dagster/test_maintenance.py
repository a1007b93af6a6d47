"""Maintenance of the Delta lake on the real MinIO: the closed day's z-order
(``compacted_trades``), the open day's compaction, the lite vacuum, and what a reader
holding an older snapshot sees meanwhile; the summary tables' upkeep."""

import datetime as dt
from collections import Counter

import obstore
import pyarrow.compute as pc
import pytest
from dagster import ExecuteInProcessResult, Failure, instance_for_test, materialize
from deltalake import DeltaTable

from finpipe import lake, lake_log, summaries
from finpipe_dagster.definitions import defs
from finpipe_dagster.instance import MAINTENANCE_POOL, MAINTENANCE_TAG
from finpipe_dagster.partitions import today_utc
from finpipe_dagster.resources.finpipe_settings import environment_overrides
from tests.support.dagster_runs import execute_at_once

from .conftest import DAY, SeededLake
from .test_close_day_drill import step_times
from .test_orphan_sweep import committed, latest, store_files

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


def upkeep_of(result: ExecuteInProcessResult, table: str) -> dict:
    """What a ``lake_maintenance_job`` run reported of ``table``."""
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    tables = output.event_specific_data.metadata["tables"].value  # type: ignore[union-attr]
    [found] = [t for t in tables if t["table"] == table]
    return found


def test_the_summaries_get_the_lakes_properties_and_lose_what_refreshes_replaced(
    seeded: SeededLake,
) -> None:
    """A summary table as the summaries were created before they had the properties of
    every finpipe table (delta-rs's defaults: replaced files kept a week, the log 30
    days). A maintenance pass gives it the missing properties and keeps the one an operator
    set; after the refreshes of a day and with the retention passed, a pass deletes every
    file they replaced and the log entries before the checkpoint, and the summary reads
    the same rows."""
    settings, name = seeded.settings, summaries.LATEST_PRICES
    [summary] = [t for t in seeded.lake_tables.summary_tables() if t.spec.name == name]
    created = DeltaTable.create(
        summary.uri,
        summaries.SCHEMAS[name],
        partition_by=[summaries.PARTITION_COLUMN],
        storage_options=dict(summary.storage_options),
    )
    created.alter.set_table_properties({"delta.checkpointInterval": "10"})  # tuned
    source = summaries.LakeState(settings.lake_uri)
    before_day = DAY - dt.timedelta(days=1)
    summaries.publish(settings, name, before_day, latest(before_day, 0.0), source=source)
    refreshes = iter(range(1, 100))

    def refresh() -> None:  # today's refresh: the day's file replaced
        summaries.publish(settings, name, DAY, latest(DAY, float(next(refreshes))), source=source)

    for _ in range(3):
        refresh()
    maintenance = defs.resolve_job_def("lake_maintenance_job")

    first = upkeep_of(maintenance.execute_in_process(resources=seeded.resources), name)

    assert first["properties_set"] == [
        "delta.deletedFileRetentionDuration",
        "delta.logRetentionDuration",
    ]
    assert first["compaction"] is None and first["files_vacuumed"] == 0  # within the hour
    snapshot = summary.open()
    assert snapshot is not None and snapshot.metadata().configuration == {
        "delta.checkpointInterval": "10",
        "delta.deletedFileRetentionDuration": "interval 1 hours",
        "delta.logRetentionDuration": "interval 24 hours",
    }

    for _ in range(6):  # past a checkpoint (every 10 commits here, written by a publish)
        refresh()
    replaced = store_files(summary) - committed(summary)
    assert len(replaced) == 8  # 9 refreshes of the day
    log = {meta["path"] for batch in obstore.list(summary.store, "_delta_log/") for meta in batch}
    assert any(path.endswith(".checkpoint.parquet") for path in log)
    before = summaries.read(settings, name).to_pylist()
    snapshot = summary.open()
    assert snapshot is not None
    snapshot.alter.set_table_properties(  # a day later, as it were
        {
            "delta.deletedFileRetentionDuration": "interval 0 seconds",
            "delta.logRetentionDuration": "interval 0 seconds",
        }
    )

    second = upkeep_of(maintenance.execute_in_process(resources=seeded.resources), name)

    assert second["properties_set"] == [] and second["files_vacuumed"] == len(replaced)
    assert store_files(summary) == committed(summary)
    assert summaries.read(settings, name).to_pylist() == before
    trimmed = {m["path"] for batch in obstore.list(summary.store, "_delta_log/") for m in batch}
    assert "_delta_log/00000000000000000000.json" in log - trimmed
    assert any(path.endswith(".checkpoint.parquet") for path in trimmed)


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
    moment, each in a process of its own as the daemon's run launcher starts them, on an
    instance with the generated pool limit. Their compacting steps never overlap, and the
    open day holds each Kafka record exactly once (two compactions from one snapshot would
    double it)."""
    day = today_utc()
    for seed in range(6):
        seeded.write(seeded.trades(day, 30, seed=70 + seed))
    for name, value in environment_overrides(seeded.resource).items():
        monkeypatch.setenv(name, value)
    pools = {"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}}}
    with instance_for_test(overrides=pools) as instance:
        # The pool's slots from the instance's default limit, as the daemon's run queue
        # sets them up before it launches a run that uses the pool.
        assert instance.event_log_storage.initialize_concurrency_limit_to_default(MAINTENANCE_POOL)
        results = execute_at_once(instance, "lake_maintenance_job", copies=2)
        assert len(results) == 2 and all(success for _, success in results), results
        spans = sorted(
            span for run_id, _ in results for span in step_times(instance, run_id).values()
        )
    assert len(spans) == 2
    (_, first_end), (second_start, _) = spans
    assert second_start >= first_end, f"two maintenance steps overlapped: {spans}"
    assert coordinates(seeded, day) == expected(seeded)
    assert set(files_per_symbol(seeded, day).values()) == {1}
