"""Seeding the lake table for the benchmarks the way the platform produces it.

The streaming writer's own code writes each micro-batch: ``spark.lake_files.write_batch_rows``
(what Spark's executors run: one Parquet file per (trade_date, symbol), sorted by Kafka
coordinates, the log's statistics), then one commit with the query's application
transaction, ``finpipe.delta_commit.commit_files`` (what the driver of ``spark.sink``
runs). Between batches, the open day's maintenance runs as ``lake_maintenance_job`` does
(``finpipe_dagster.lake.maintenance.maintain``: the open day compacted, a lite vacuum,
the log cleanup), and a closed day is z-ordered as ``compacted_trades`` does.

A day of 5 s micro-batches is 17,280 commits; the object store takes minutes per
thousand, so a benchmark replays only the last minutes before the moment it measures as
micro-batches (:meth:`Seeder.batch`) and *fast-forwards* the time before: those rows are
committed in a few large commits (:meth:`Seeder.fast_forward`, one per hour of rows),
which the maintenance then compacts exactly as it compacts the micro-batches (files
below ``OPEN_DAY_TARGET_BYTES`` binned together), so the day's files are what the
maintenance leaves. What the fast-forward does not reproduce: the table version (a few
dozen commits instead of one per 5 s: the log entries before the last checkpoint, which a
reader does not read) and the tombstones of the fast-forwarded part (one per symbol and
hour, instead of the removes of compactions older than the replayed minutes, which the
table's one-hour ``delta.deletedFileRetentionDuration`` drops from the checkpoints
anyway once the replay covers an hour).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from finpipe import contracts, delta_commit, lake
from finpipe.settings import Settings
from finpipe_dagster.lake import maintenance
from finpipe_dagster.resources import FinpipeSettings, LakeTables, s3_resource
from spark.lake_files import LAKE_KIND, LakeLocation, write_batch_rows
from spark.sink import add_actions

TRIGGER_S = 5
"""SPARK_TRIGGER_SECONDS' default: one micro-batch every 5 s."""
MAINTENANCE_EVERY = 300 // TRIGGER_S
MS = pa.timestamp("ms", tz="UTC")
"""Batches between two maintenance runs (LAKE_MAINTENANCE_SENSOR_INTERVAL_SECONDS' 300 s)."""


def prepared(rows: pa.Table) -> pa.Table:
    """``LAKE_SCHEMA`` rows as the writer receives them from the parse step (all valid)."""
    n = rows.num_rows
    ms = lambda name: rows[name].cast(MS, safe=False).cast(pa.int64())  # noqa: E731
    return pa.table(
        {
            "valid": pa.array([True] * n, pa.bool_()),
            "symbol": rows["symbol"],
            "price": rows["price"],
            "volume": rows["volume"],
            "trade_value": rows["trade_value"],
            "trade_ts_ms": ms("trade_ts"),
            "ingest_ts_ms": ms("ingest_ts"),
            "conditions": rows["conditions"],
            "kafka_partition": rows["kafka_partition"],
            "kafka_offset": rows["kafka_offset"],
            "trade_date": rows["trade_date"],
        }
    )


class Seeder:
    """Writes batches to the lake table of ``settings`` and runs its maintenance."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.table = lake.trades_table(settings)
        self.delta: DeltaTable = self.table.ensure()
        self.fs = lake.s3_filesystem(settings)
        # The maintenance job's resource, for these settings' lake (the endpoint and keys
        # come from the same environment the settings were loaded from).
        self.lake_tables = LakeTables(
            settings=FinpipeSettings(
                lake_prefix=settings.lake_prefix, summaries_prefix=settings.summaries_prefix
            ),
            s3=s3_resource(settings),
        )
        root = f"{settings.s3_bucket}/{self.table.key_prefix}"
        self.location = LakeLocation(root, root + contracts.REJECTS_SUFFIX)
        self.commits = 0
        self.files = 0
        self.maintenance_runs = 0
        self.seconds = 0.0  # spent writing, committing and maintaining

    @property
    def version(self) -> int:
        return self.delta.version()

    def batch(self, rows: pa.Table, batch_id: int, processed_ms: int | None = None) -> int:
        """One micro-batch of ``rows`` (``LAKE_SCHEMA``), written and committed as the
        streaming query does; returns the table version."""
        if rows.num_rows == 0:
            return self.version
        started = time.perf_counter()
        if processed_ms is None:
            processed_ms = pc.max(rows["processed_ts"]).cast(pa.int64()).as_py() // 1000
        report = write_batch_rows(
            prepared(rows).to_batches(),
            location=self.location,
            batch_id=batch_id,
            processed_ts_ms=processed_ms,
            filesystem=self.fs,
            threads=self.settings.spark_write_threads,
        )
        adds = add_actions([r for r in report.to_pylist() if r["kind"] == LAKE_KIND])
        self.delta.update_incremental()  # the maintenance commits too
        delta_commit.commit_files(
            self.delta,
            adds,
            app_id=contracts.SPARK_APP_ID,
            batch_id=batch_id,
            partition_by=contracts.LAKE_TABLE.partition_by,
            schema=contracts.LAKE_TABLE.schema,
        )
        self.commits += 1
        self.files += len(adds)
        self.seconds += time.perf_counter() - started
        return self.version

    def fast_forward(self, chunks: Iterable[tuple[int, pa.Table]]) -> int:
        """Rows before the replayed minutes, one commit per ``(last batch id, rows)``
        chunk (an hour of rows each, say); compact them with :meth:`maintain`."""
        for batch_id, rows in chunks:
            self.batch(rows, batch_id)
        return self.version

    def maintain(self, day: dt.date) -> list[maintenance.TableUpkeep]:
        """One ``lake_maintenance_job`` run for the open ``day``."""
        started = time.perf_counter()
        found = maintenance.maintain(self.lake_tables, day)
        self.maintenance_runs += 1
        self.seconds += time.perf_counter() - started
        self.delta.update_incremental()
        return found

    def close_day(self, day: dt.date) -> maintenance.OptimizeReport:
        """A closed day z-ordered, as ``compacted_trades`` does."""
        started = time.perf_counter()
        self.delta.update_incremental()
        found = maintenance.z_order_day(self.delta, day)
        self.seconds += time.perf_counter() - started
        self.delta.update_incremental()
        return found


def cleanup(settings: Settings, root: str) -> None:
    """Delete every object under ``root/`` in the bucket."""
    client = lake.s3_client(settings)
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=settings.s3_bucket, Prefix=f"{root}/"):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=settings.s3_bucket, Delete={"Objects": keys})


def log_size(settings: Settings, table: lake.LakeTable) -> dict[str, int]:
    """The table's ``_delta_log``: commit entries, checkpoints, their bytes, and the size
    of the newest checkpoint (what a reader opening the table reads first)."""
    client = lake.s3_client(settings)
    paginator = client.get_paginator("list_objects_v2")
    found = {"json": 0, "json_bytes": 0, "checkpoints": 0, "checkpoint_bytes": 0}
    newest: tuple[str, int] = ("", 0)
    for page in paginator.paginate(
        Bucket=settings.s3_bucket, Prefix=f"{table.key_prefix}/_delta_log/"
    ):
        for item in page.get("Contents", []):
            name = item["Key"].rsplit("/", 1)[1]
            if name.endswith(".json") and name[:20].isdigit():
                found["json"] += 1
                found["json_bytes"] += item["Size"]
            elif ".checkpoint" in name:
                found["checkpoints"] += 1
                found["checkpoint_bytes"] += item["Size"]
                newest = max(newest, (name, item["Size"]))
    found["newest_checkpoint_bytes"] = newest[1]
    return found
