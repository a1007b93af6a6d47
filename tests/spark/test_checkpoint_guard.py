"""The checkpoint regression guard: the checkpoint's last planned batch against the batches
the lake's tables committed (their application transactions)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import CommitProperties, Transaction, write_deltalake

from finpipe import contracts, lake
from finpipe.lake import LakeTable
from finpipe.settings import Settings, load_settings
from spark.job import (
    LakeCheckpointMismatch,
    check_checkpoint_matches_lake,
    last_planned_batch,
    one_line,
    root_cause,
)


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


def _guarded(infrastructure: Settings, tmp_path: Path, planned: int) -> Settings:
    """Settings of a new table, and a checkpoint that planned batches up to ``planned``."""
    offsets = tmp_path / "checkpoint" / "offsets"
    offsets.mkdir(parents=True)
    for batch in range(planned + 1):
        (offsets / str(batch)).write_text("v1")
    return load_settings(
        LAKE_PREFIX=f"tests/guard-{uuid.uuid4().hex[:8]}",
        SPARK_CHECKPOINT_DIR=tmp_path / "checkpoint",
        FINPIPE_HOME=tmp_path / "home",
    )


def _commit_batch(table: LakeTable, batch_id: int) -> None:
    write_deltalake(
        table.ensure(),
        table.spec.schema.empty_table(),
        mode="append",
        commit_properties=CommitProperties(
            app_transactions=[Transaction(contracts.SPARK_APP_ID, batch_id)]
        ),
    )


def test_a_new_lake_is_created_and_accepted(infrastructure: Settings, tmp_path: Path) -> None:
    settings = _guarded(infrastructure, tmp_path, -1)
    check_checkpoint_matches_lake(settings)
    for table in (lake.trades_table(settings), lake.rejects_table(settings)):
        snapshot = table.open()
        assert snapshot is not None and snapshot.version() == 0
        assert pa.schema(snapshot.schema().to_arrow()) == table.spec.schema
        assert snapshot.metadata().partition_columns == list(table.spec.partition_by)
        assert snapshot.metadata().configuration == table.spec.configuration


def test_the_tables_may_be_one_batch_ahead_of_the_commit_log_never_of_the_plan(
    infrastructure: Settings, tmp_path: Path
) -> None:
    settings = _guarded(infrastructure, tmp_path, 4)
    _commit_batch(lake.trades_table(settings), 4)  # committed; Spark's commit log may lack it
    check_checkpoint_matches_lake(settings)
    # The rejects table is ahead: a batch the checkpoint never planned.
    _commit_batch(lake.rejects_table(settings), 5)
    with pytest.raises(LakeCheckpointMismatch) as refused:
        check_checkpoint_matches_lake(settings)
    message = str(refused.value)
    assert "batch 5" in message and "up to 4" in message, message
    for words in ("SPARK_CHECKPOINT_DIR", "LAKE_PREFIX", settings.lake_uri):
        assert words in message


def test_a_new_checkpoint_over_a_committed_table_is_refused(
    infrastructure: Settings, tmp_path: Path
) -> None:
    settings = _guarded(infrastructure, tmp_path, -1)
    _commit_batch(lake.trades_table(settings), 0)
    with pytest.raises(LakeCheckpointMismatch, match=r"checkpoint .* is new"):
        check_checkpoint_matches_lake(settings)


def test_a_store_clients_error_is_shown_on_one_plain_line() -> None:
    tree = (
        "Generic S3 error\n  \x1b[31m↳\x1b[0m Error performing GET http://127.0.0.1:1/x\n"
        "   \x1b[31m↳\x1b[0m Connection refused (os error 111)\n"
    )
    assert one_line(tree) == (
        "Generic S3 error / Error performing GET http://127.0.0.1:1/x / "
        "Connection refused (os error 111)"
    )
    assert len(one_line("x" * 1000)) == 400
