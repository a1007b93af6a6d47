"""The weekly orphan sweep: which files it deletes, which it never deletes, and the job the
schedule starts.

delta-rs ages a file no commit names by its last-modified time in the store. On a local
table a test can back-date a file (``os.utime``), so the first tests run the sweep as the
job does, with its week of retention. MinIO cannot back-date an object, so the tests on
the real store pass a retention of hours instead of the week (``sweep_tables``'s
parameter, which the job never passes) and run the job itself to see what it reports.
"""

import datetime as dt
import os
import time
import urllib.parse
from pathlib import Path

import obstore
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from finpipe import lake, summaries
from finpipe_dagster.definitions import defs
from finpipe_dagster.instance import MAINTENANCE_POOL, MAINTENANCE_TAG
from finpipe_dagster.lake.orphan_sweep import (
    ORPHAN_SWEEP_RETENTION_HOURS,
    Sweep,
    orphan_sweep_job,
    sweep_tables,
)
from spark.sink import MAX_UNCOMMITTED_SECONDS

from .conftest import DAY, SeededLake

NAME = summaries.LATEST_PRICES
HOUR = 3600.0


def latest(day: dt.date, price: float) -> pa.Table:
    at = dt.datetime.combine(day, dt.time(15, 59), dt.UTC)
    return pa.Table.from_pylist(
        [
            {
                "trade_date": day,
                "symbol": f"S{i}",
                "price": price + i,
                "volume": 1.0,
                "trade_ts": at,
                "computed_ts": at,
            }
            for i in range(3)
        ],
        schema=summaries.SCHEMAS[NAME],
    )


def local_summary(root: Path) -> tuple[lake.LakeTable, DeltaTable]:
    """A local summary table with two publishes of one day: one live file, one removed."""
    spec_table = lake.local_table(root, summaries.SPECS[NAME])
    table = spec_table.ensure()
    for price in (1.0, 2.0):
        write_deltalake(
            table, latest(DAY, price), mode="overwrite", predicate=f"trade_date = '{DAY}'"
        )
    return spec_table, table


def backdate(path: Path, age_hours: float) -> Path:
    """``path`` as the store dates a file written ``age_hours`` ago."""
    modified = time.time() - age_hours * HOUR
    os.utime(path, (modified, modified))
    return path


def put(path: Path, age_hours: float) -> Path:
    """A file no commit names, written ``age_hours`` ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PAR1 a file no commit names")
    return backdate(path, age_hours)


def local_files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "_delta_log" not in p.parts
    }


def test_the_retention_outlasts_every_write_a_writer_may_still_commit() -> None:
    # Spark refuses to commit files older than MAX_UNCOMMITTED_SECONDS (a summary publish
    # commits what it has just written): a week is far beyond both.
    assert ORPHAN_SWEEP_RETENTION_HOURS * HOUR >= 24 * MAX_UNCOMMITTED_SECONDS


def test_only_files_no_commit_names_and_older_than_a_week_are_swept(tmp_path: Path) -> None:
    root = tmp_path / NAME
    spec_table, _ = local_summary(root)
    # Files a commit names are never orphans, however old: the live one, and the one the
    # second publish removed (within the table's retention), both back-dated by a month.
    named = local_files(root)
    assert len(named) == 2
    for path in named:
        backdate(root / path, 30 * 24)
    partition = root / f"trade_date={DAY}"
    old = put(partition / "part-00000-crashed-publish.parquet", ORPHAN_SWEEP_RETENTION_HOURS + 1)
    young = put(partition / "part-00000-being-committed.parquet", 2)  # past Spark's hour
    before = DeltaTable(str(root)).to_pyarrow_table().to_pylist()

    assert sweep_tables([spec_table]) == [Sweep(NAME, 1)]

    assert not old.exists() and young.exists()
    assert local_files(root) == named | {young.relative_to(root).as_posix()}
    assert DeltaTable(str(root)).to_pyarrow_table().to_pylist() == before
    assert sweep_tables([spec_table]) == [Sweep(NAME, 0)]  # nothing left to sweep


@pytest.mark.parametrize(
    "old_name",
    [
        f"trade_date={DAY}/{summaries.PRE_DELTA_OBJECT}",  # a summary's day before Delta
        f"trade_date={DAY}/symbol=AAPL/batch-000000000007.parquet",  # the lake's batches
        f"trade_date={DAY}/symbol=AAPL/compacted-000000000001-000000000009.parquet",
    ],
)
def test_a_table_beside_files_of_the_pre_delta_layout_is_left_alone(
    tmp_path: Path, old_name: str
) -> None:
    """Rows a migration has yet to convert are no orphans, however old."""
    root = tmp_path / NAME
    spec_table, _ = local_summary(root)
    old = put(root / old_name, 90 * 24)
    orphan = put(root / f"trade_date={DAY}/part-00000-crashed.parquet", 90 * 24)

    assert sweep_tables([spec_table]) == [Sweep(NAME, 0, pre_delta_files=1)]
    assert old.exists() and orphan.exists()


def test_the_sweep_runs_in_the_maintenance_pool_of_one() -> None:
    job = defs.resolve_job_def("orphan_sweep_job")
    assert [node.definition.pool for node in job.nodes] == [MAINTENANCE_POOL]
    assert job.tags[MAINTENANCE_TAG] == "lake"
    schedule = defs.get_repository_def().get_schedule_def("orphan_sweep_schedule")
    assert (schedule.job_name, schedule.execution_timezone) == ("orphan_sweep_job", "UTC")


# --- on the real MinIO ---------------------------------------------------------------


def store_files(spec_table: lake.LakeTable) -> set[str]:
    """The table's data files in the store (its log aside)."""
    return {
        meta["path"]
        for batch in obstore.list(spec_table.store)
        for meta in batch
        if not meta["path"].startswith("_delta_log/")
    }


def committed(spec_table: lake.LakeTable) -> set[str]:
    snapshot = spec_table.open()
    assert snapshot is not None
    paths = pa.table(snapshot.get_add_actions(flatten=True))["path"].to_pylist()
    return {urllib.parse.unquote(p) for p in paths}


def rows(spec_table: lake.LakeTable) -> list[dict]:
    snapshot = spec_table.open()
    assert snapshot is not None
    return sorted(snapshot.to_pyarrow_table().to_pylist(), key=str)


def seed_tables(seeded: SeededLake) -> list[lake.LakeTable]:
    """Every table with committed files and one orphan each; the table's retention short,
    so that only the sweep's own retention decides."""
    seeded.write(seeded.trades(DAY, 20, seed=1))
    seeded.write(seeded.trades(DAY, 20, seed=2))
    seeded.lake_tables.rejects_table().ensure()
    for price in (1.0, 2.0):
        summaries.publish(
            seeded.settings, NAME, DAY, latest(DAY, price), source=summaries.LakeState("test")
        )
    tables = [t for t in seeded.lake_tables.tables() if t.open() is not None]
    for spec_table in tables:
        snapshot = spec_table.open()
        assert snapshot is not None
        snapshot.alter.set_table_properties(
            {"delta.deletedFileRetentionDuration": "interval 0 seconds"}
        )
        folder = f"{spec_table.spec.partition_by[0]}={DAY}"
        obstore.put(spec_table.store, f"{folder}/part-00000-orphan.parquet", b"PAR1 orphan")
    return tables


def test_the_sweep_on_minio_deletes_orphans_past_its_retention_and_nothing_committed(
    seeded: SeededLake,
) -> None:
    tables = seed_tables(seeded)
    names = [t.spec.name for t in tables]
    assert names == ["processed_trades", "processed_trades_rejects", NAME]
    before = {t.spec.name: rows(t) for t in tables}

    # The job, with its week: every table reported, nothing deleted (all is minutes old).
    result = orphan_sweep_job.execute_in_process(resources=seeded.resources)
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata  # type: ignore[union-attr]
    assert metadata["retention_hours"].value == ORPHAN_SWEEP_RETENTION_HOURS
    assert metadata["files_deleted"].value == 0
    assert [(s["table"], s["files_deleted"]) for s in metadata["tables"].value] == [
        (name, 0) for name in names
    ]
    # An hour: the orphans, seconds old, stay.
    assert sweep_tables(tables, retention_hours=1) == [Sweep(name, 0) for name in names]
    assert all(store_files(t) - committed(t) for t in tables)

    # No retention: each table's orphan goes, and each file a commit names stays.
    swept = sweep_tables(tables, retention_hours=0)

    assert [(s.table, s.files_deleted >= 1) for s in swept] == [(name, True) for name in names]
    for spec_table in tables:
        assert store_files(spec_table) == committed(spec_table)
        assert rows(spec_table) == before[spec_table.spec.name]


def test_the_sweep_on_minio_leaves_a_summary_of_the_pre_delta_layout_alone(
    seeded: SeededLake,
) -> None:
    [*_, summary] = seed_tables(seeded)
    old = f"trade_date=2026-01-05/{summaries.PRE_DELTA_OBJECT}"
    obstore.put(summary.store, old, b"PAR1 a day before Delta")

    swept = {s.table: s for s in sweep_tables([summary], retention_hours=0)}

    assert swept[NAME] == Sweep(NAME, 0, pre_delta_files=1)
    assert old in store_files(summary) and store_files(summary) - committed(summary) - {old}
