"""Rolling compaction of the open day on the real MinIO, while a reader holds a listing."""

from collections import Counter

import pytest

from finpipe import contracts, lake
from finpipe_dagster.definitions import defs
from finpipe_dagster.lake.rolling_compaction import roll_day
from finpipe_dagster.partitions import today_utc
from finpipe_dagster.resources import LakeS3Resource

from .conftest import SeededLake


def keys(seeded: SeededLake) -> Counter:
    table = lake.lake_dataset(seeded.settings, [today_utc()]).to_table()
    return Counter(
        zip(table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist(), strict=True)
    )


def names(seeded: SeededLake) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for file in lake.list_lake_objects(seeded.settings, [today_utc()]):
        found.setdefault(file.symbol, []).append(file.name)
    return {s: sorted(n) for s, n in found.items()}


def test_batches_fold_into_bounded_segments_and_every_row_stays_once(
    seeded: SeededLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLING_COMPACTION_MIN_AGE_SECONDS", "0")
    monkeypatch.setenv("ROLLING_COMPACTION_SEGMENT_BATCHES", "4")
    day = today_utc()
    for seed in range(6):
        seeded.write(seeded.trades(day, 30, seed=40 + seed))
    expected = Counter((r["kafka_partition"], r["kafka_offset"]) for r in seeded.rows)
    before = lake.list_lake_files(seeded.settings, [day])  # a reader's listing, held
    settings = seeded.resource.load()
    fs = lake.s3_filesystem(settings)
    report = roll_day(settings, fs, LakeS3Resource(settings=seeded.resource), day)
    assert report.batches_folded == 12 and report.segments_written == 4  # 2 per symbol
    assert report.leftovers_deleted == 0  # within the grace period
    # the reader that listed before the switch still reads its objects, each row once
    old = lake.files_dataset(before, fs).to_table()
    assert len(old) == len(expected)
    assert keys(seeded) == expected
    S = contracts.compacted_segment_name
    for found in names(seeded).values():
        assert contracts.visible_object_names(found) == [S(0, 3), S(4, 5)]

    # more batches: the open segment (4..5) grows to its span, the next one starts
    for seed in range(4):
        seeded.write(seeded.trades(day, 20, seed=60 + seed))
    monkeypatch.setenv("COMPACTION_GRACE_SECONDS", "0")
    result = defs.resolve_job_def("rolling_compaction_job").execute_in_process(
        resources=seeded.resources
    )
    assert result.success
    expected = Counter((r["kafka_partition"], r["kafka_offset"]) for r in seeded.rows)
    assert keys(seeded) == expected
    for found in names(seeded).values():
        assert found == [S(0, 3), S(4, 7), S(8, 9)]  # the replaced objects are gone


def test_young_batches_stay_files(seeded: SeededLake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLING_COMPACTION_MIN_AGE_SECONDS", "3600")
    day = today_utc()
    for seed in range(3):
        seeded.write(seeded.trades(day, 10, seed=80 + seed))
    settings = seeded.resource.load()
    report = roll_day(
        settings, lake.s3_filesystem(settings), LakeS3Resource(settings=seeded.resource), day
    )
    assert (report.segments_written, report.batches_folded) == (0, 0)
    assert all(all(n.startswith("batch-") for n in f) for f in names(seeded).values())
