"""Compaction of a closed day on the real MinIO."""

import pytest
from dagster import Failure, materialize

from finpipe import contracts, lake
from finpipe_dagster.definitions import defs
from finpipe_dagster.lake.compaction import compact_folder, partition_files
from finpipe_dagster.partitions import today_utc

from .conftest import DAY, SeededLake

compacted_trades = defs.get_assets_def("compacted_trades")


@pytest.fixture
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the rewrite: replaced objects go at once (the grace period
    has its own tests in test_close_day_drill.py)."""
    monkeypatch.setenv("COMPACTION_GRACE_SECONDS", "0")


@pytest.mark.usefixtures("no_grace")
def test_compaction_keeps_rows_and_reduces_files(seeded: SeededLake) -> None:
    for seed in range(3):
        seeded.write(seeded.trades(DAY, 40, seed=20 + seed))
    seeded.write(seeded.rows[:5])  # a replayed batch: the same Kafka records again
    fs = lake.s3_filesystem(seeded.settings)
    files_before = sum(len(p) for p in partition_files(fs, seeded.settings, DAY).values())
    assert files_before == 8  # 4 batches x 2 symbols

    result = materialize(
        [compacted_trades], partition_key=DAY.isoformat(), resources=seeded.resources
    )
    assert result.success
    metadata = result.asset_materializations_for_node("compacted_trades")[0].metadata
    assert (metadata["files_before"].value, metadata["files_after"].value) == (8, 2)
    assert metadata["duplicates_dropped"].value == 5
    assert metadata["rows"].value == 120

    names = _names(seeded)
    assert all(found == [contracts.compacted_file_name(3)] for found in names.values()), names
    table = lake.lake_dataset(seeded.settings, [DAY]).to_table()
    assert table.num_rows == 120
    keys = {(r["kafka_partition"], r["kafka_offset"]) for r in table.to_pylist()}
    assert len(keys) == 120

    # A late batch after compaction (late trades, a replayed session) is visible at once,
    # beside the compacted file, and the next run folds it in.
    seeded.write(seeded.trades(DAY, 7, seed=30))
    assert lake.lake_dataset(seeded.settings, [DAY]).to_table().num_rows == 127
    assert materialize(
        [compacted_trades], partition_key=DAY.isoformat(), resources=seeded.resources
    ).success
    assert all(found == [contracts.compacted_file_name(4)] for found in _names(seeded).values())
    assert lake.lake_dataset(seeded.settings, [DAY]).to_table().num_rows == 127


@pytest.mark.usefixtures("no_grace")
def test_a_compaction_stopped_before_its_deletes_is_finished_by_the_next_run(
    seeded: SeededLake,
) -> None:
    for seed in range(2):
        seeded.write(seeded.trades(DAY, 30, seed=40 + seed))
    fs = lake.s3_filesystem(seeded.settings)
    for paths in partition_files(fs, seeded.settings, DAY).values():
        compact_folder(fs, paths)  # the write, without the deletes
    names = _names(seeded)
    assert all(len(found) == 3 for found in names.values()), names
    assert lake.lake_dataset(seeded.settings, [DAY]).to_table().num_rows == 60  # none twice

    result = materialize(
        [compacted_trades], partition_key=DAY.isoformat(), resources=seeded.resources
    )
    assert result.success
    assert all(found == [contracts.compacted_file_name(1)] for found in _names(seeded).values())
    assert lake.lake_dataset(seeded.settings, [DAY]).to_table().num_rows == 60


def _names(seeded: SeededLake) -> dict[str, list[str]]:
    fs = lake.s3_filesystem(seeded.settings)
    folders = partition_files(fs, seeded.settings, DAY)
    return {folder: [p.rsplit("/", 1)[1] for p in paths] for folder, paths in folders.items()}


def test_compaction_refuses_the_open_day(seeded: SeededLake) -> None:
    with pytest.raises(Failure, match="open day"):
        materialize(
            [compacted_trades], partition_key=today_utc().isoformat(), resources=seeded.resources
        )
