"""What the checkpoint regression guard compares: the checkpoint's last planned batch."""

from __future__ import annotations

from pathlib import Path

from spark.job import last_planned_batch, root_cause


def test_a_new_checkpoint_has_planned_nothing(tmp_path: Path) -> None:
    assert last_planned_batch(tmp_path / "missing") == -1
    (tmp_path / "offsets").mkdir()
    assert last_planned_batch(tmp_path) == -1


def test_the_last_planned_batch_counts_even_without_its_commit(tmp_path: Path) -> None:
    """A batch written but not committed is replayed into the same objects: expected."""
    (tmp_path / "offsets").mkdir()
    (tmp_path / "commits").mkdir()
    for batch in (7, 8, 9, 10):
        (tmp_path / "offsets" / str(batch)).write_text("v1")
    for batch in (7, 8, 9):
        (tmp_path / "commits" / str(batch)).write_text("v1")
    (tmp_path / "offsets" / ".10.crc").write_text("")
    (tmp_path / "offsets" / "11.tmp").write_text("")
    assert last_planned_batch(tmp_path) == 10


def test_a_failed_query_is_reported_by_its_innermost_cause() -> None:
    wrapped = (
        "An exception was raised by the Python Proxy. Return Message: Traceback (most recent"
        ' call last):\n  File "spark/sink.py", line 87, in __call__\n'
        "py4j.protocol.Py4JJavaError: An error occurred while calling o739.collectToPython.\n"
        ": org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 failed\n"
        "\tat org.apache.spark.scheduler.DAGScheduler.abortStage(DAGScheduler.scala:3310)\n"
        "Caused by: org.apache.kafka.common.errors.TimeoutException: Timeout of 60000ms"
        " expired before the position for partition t-0 could be determined\n"
        "=== Streaming Query ===\n"
    )
    assert root_cause(wrapped) == (
        "org.apache.kafka.common.errors.TimeoutException: Timeout of 60000ms expired before"
        " the position for partition t-0 could be determined"
    )
    no_cause = "Traceback:\n: org.apache.spark.SparkException: Job aborted\n\tat x.y(Z.scala:1)"
    assert root_cause(no_cause) == "org.apache.spark.SparkException: Job aborted"
    assert root_cause("the query stopped by itself") == "the query stopped by itself"
