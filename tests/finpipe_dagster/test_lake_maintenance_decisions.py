"""The pure decisions of lake maintenance and of the bounded checks: which errors mean a
file vanished under a reader, the reader's one retry, which rows a bounded check reads,
and when the maintenance sensor asks for a run. (What a closed day needs: test_late_data.py.)"""

import obstore.exceptions
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from dagster import (
    DagsterRunStatus,
    RunRequest,
    SkipReason,
    build_sensor_context,
    instance_for_test,
)

from finpipe import lake, lake_log
from finpipe_dagster.lake.checks import coordinates_filter, new_offset_ranges
from finpipe_dagster.lake.maintenance import (
    MAINTENANCE_TAGS,
    lake_maintenance_job,
    request_maintenance,
)


class _ClientError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}}


def test_which_errors_mean_an_object_vanished() -> None:
    assert lake.object_vanished(FileNotFoundError("gone"))
    assert lake.object_vanished(_ClientError("NoSuchKey"))
    assert lake.object_vanished(OSError("When reading information for key 'x': NoSuchKey"))
    assert lake.object_vanished(obstore.exceptions.NotFoundError("Object at location x not found"))
    wrapped = RuntimeError("scan failed")
    wrapped.__cause__ = FileNotFoundError("Path does not exist 'warehouse/x.parquet'")
    assert lake.object_vanished(wrapped)
    assert not lake.object_vanished(_ClientError("AccessDenied"))
    assert not lake.object_vanished(ConnectionError("connection refused"))


def test_a_read_is_retried_once_when_an_object_vanished_and_never_otherwise() -> None:
    calls: list[int] = []

    def vanishing_once() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise FileNotFoundError("Path does not exist")
        return "read"

    assert lake.read_reloading(vanishing_once) == "read" and len(calls) == 2

    def always_vanishing() -> str:
        calls.append(1)
        raise FileNotFoundError("Path does not exist")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        lake.read_reloading(always_vanishing)
    assert len(calls) == 2

    def refused() -> str:
        calls.append(1)
        raise PermissionError("AccessDenied")

    calls.clear()
    with pytest.raises(PermissionError):
        lake.read_reloading(refused)
    assert len(calls) == 1


def _add(partition: int, low: int, high: int, rows: int = 1) -> lake_log.FileAdd:
    return lake_log.FileAdd(
        version=1,
        path="x.parquet",
        partition={"trade_date": "2026-03-02", "symbol": "AAPL"},
        rows=rows,
        min_values={"kafka_partition": partition, "kafka_offset": low},
        max_values={"kafka_partition": partition, "kafka_offset": high},
        commit_ms=0,
    )


def test_a_bounded_check_reads_the_offset_ranges_the_new_files_hold() -> None:
    adds = [_add(0, 10, 19), _add(0, 30, 35), _add(1, 4, 4), _add(2, 0, 9, rows=0)]
    ranges = new_offset_ranges(adds)
    assert ranges == {0: (10, 35), 1: (4, 4)}  # an empty file holds nothing to check
    without_stats = lake_log.FileAdd(1, "y.parquet", {}, 3, {}, {}, 0)
    assert new_offset_ranges([*adds, without_stats]) is None  # then: whole days
    rows = pa.table(
        {
            "kafka_partition": pa.array([0, 0, 0, 1, 1, 2], pa.int32()),
            "kafka_offset": pa.array([9, 10, 35, 4, 5, 0], pa.int64()),
        }
    )
    assert ranges is not None
    found = ds.dataset(rows).to_table(filter=coordinates_filter(ranges)).to_pylist()
    assert [(r["kafka_partition"], r["kafka_offset"]) for r in found] == [(0, 10), (0, 35), (1, 4)]
    assert coordinates_filter({}) is None


@pytest.mark.parametrize(
    "status", [None, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.SUCCESS]
)
def test_the_maintenance_sensor_never_asks_while_a_maintenance_run_is_live(
    status: DagsterRunStatus | None,
) -> None:
    with instance_for_test() as instance:
        if status is not None:
            instance.create_run_for_job(
                lake_maintenance_job, tags=dict(MAINTENANCE_TAGS), status=status
            )
        with build_sensor_context(instance=instance) as context:
            found = request_maintenance(context)
    live = status in (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED)
    assert isinstance(found, SkipReason if live else RunRequest), found
