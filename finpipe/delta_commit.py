"""Committing files written elsewhere to a Delta table, once: the two-phase write.

Spark's executors write a micro-batch's Parquet files straight into the table's folder
(one file per partition they own); the driver then makes them part of the table with one
commit. Until that commit no reader sees them, and after it every reader sees all of them:
the batch is atomic however many files it wrote.

The commit carries an application transaction ``(app_id, batch_id)``. delta-rs records
the pair but refuses nothing, so a replayed batch (Spark re-runs the batch that was in
flight when the job died) would append its rows a second time: :func:`commit_files`
checks the recorded version first and adds nothing for a batch that is already in.

The files' names are unique per write (the batch id and a random part), never reused: a
replay writes new files and commits nothing, and the files of a write that was never
committed are not in the log, so no reader and no lite vacuum ever sees them.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.transaction import AddAction, PostCommitHookProperties

from finpipe import contracts


def data_file_path(partition_values: Mapping[str, str], batch_id: int) -> str:
    """A new file's path relative to the table: the Hive-style partition folders (values
    percent-encoded, as delta-rs and Spark write them), then a name no other write uses."""
    folders = "/".join(
        f"{k}={contracts.quote_partition_value(v)}" for k, v in partition_values.items()
    )
    return f"{folders}/part-{batch_id:012d}-{uuid.uuid4().hex}.parquet"


def _stat_value(value: object) -> object:
    # A timestamp bound as delta-rs writes one: UTC, milliseconds only when there are any.
    if isinstance(value, dt.datetime):
        utc = value.astimezone(dt.UTC)
        millis = utc.microsecond // 1000
        return utc.strftime("%Y-%m-%dT%H:%M:%S") + (f".{millis:03d}" if millis else "") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def file_stats(rows: pa.Table, columns: Sequence[str]) -> str:
    """The ``stats`` of a file holding ``rows``: its row count, and the bounds and null
    counts of ``columns`` (the ones readers prune by; fewer columns, a smaller log)."""
    minimum, maximum, nulls = {}, {}, {}
    for name in columns:
        bounds = pc.min_max(rows[name])
        if bounds["min"].is_valid:
            minimum[name] = _stat_value(bounds["min"].as_py())
            maximum[name] = _stat_value(bounds["max"].as_py())
        nulls[name] = rows[name].null_count
    return json.dumps(
        {
            "numRecords": rows.num_rows,
            "minValues": minimum,
            "maxValues": maximum,
            "nullCount": nulls,
        }
    )


def add_action(
    path: str,
    size: int,
    partition_values: Mapping[str, str],
    rows: pa.Table,
    stats_columns: Sequence[str],
) -> AddAction:
    """The log's record of one written file (``rows`` are what the file holds)."""
    return AddAction(
        path,
        size,
        dict(partition_values),
        int(time.time() * 1000),
        True,
        file_stats(rows, stats_columns),
    )


def committed_version(table: DeltaTable, app_id: str) -> int | None:
    """The newest batch id ``app_id`` committed to the table (None: none yet)."""
    return table.transaction_version(app_id)


def commit_files(
    table: DeltaTable,
    adds: Sequence[AddAction],
    *,
    app_id: str,
    batch_id: int,
    partition_by: Sequence[str],
    schema: pa.Schema,
) -> int | None:
    """Append the files of batch ``batch_id`` in one commit; returns the table version it
    made, or None when the table already holds that batch (a replay: nothing is added).

    Expired log files are left to the maintenance job: the hook would otherwise delete
    them inside the writer's commit, on the stream's critical path.
    """
    done = committed_version(table, app_id)
    # Not `done or -1`: batch 0 is a committed batch too.
    if done is not None and done >= batch_id:
        return None
    table.create_write_transaction(
        list(adds),
        mode="append",
        schema=schema,
        partition_by=list(partition_by),
        commit_properties=CommitProperties(app_transactions=[Transaction(app_id, batch_id)]),
        post_commithook_properties=PostCommitHookProperties(
            create_checkpoint=True, cleanup_expired_logs=False
        ),
    )
    table.update_incremental()
    return table.version()
