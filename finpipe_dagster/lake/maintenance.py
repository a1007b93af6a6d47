"""Maintenance of the lake's Delta tables: compaction, vacuum, log cleanup.

delta-rs does the work; this module decides what runs when, and that it never runs twice
at once:

* ``compacted_trades`` (daily partitions, after the day's summaries): a closed day
  z-ordered by ``trade_ts`` (``optimize.z_order``), so a day ends as few large files per
  symbol, sorted by trade time. Late trades of the day are folded in by running it again.
  Open days are refused: the open day is the maintenance job's.
* ``lake_maintenance_job`` (``lake_maintenance_sensor``, every
  ``LAKE_MAINTENANCE_SENSOR_INTERVAL_SECONDS``): the open day compacted
  (``optimize.compact``; files at or above ``OPEN_DAY_TARGET_BYTES`` are left alone, which
  bounds the rewrite per run), then a lite vacuum and a log cleanup of every table, the
  summaries' too (each refresh of today's summaries replaces the day's file: without a
  vacuum every version's file would stay). A table created without a property of its
  contract (a summary table before the summaries had them) gets it first.
* ``orphan_sweep_job`` (``finpipe_dagster.lake.orphan_sweep``, weekly): files no commit
  names, older than a week.

A compaction commits ``dataChange=false`` adds and removes: readers following the log
(``finpipe.lake_log``) do not take its files for new rows, and a reader's snapshot keeps
the replaced files until the vacuum removes them, ``delta.deletedFileRetentionDuration``
after the compaction (readers slower than that reload once: ``lake.read_reloading``).

**Never two at once.** Two concurrent compactions of one partition both commit in
deltalake 1.6.6, and the rows are doubled (``tests/finpipe/test_delta_commit.py`` keeps a
canary). Every op and asset here that commits to a table runs in the Dagster pool
``lake_maintenance`` (the instance limits each pool to one slot: ``instance.py``), and
the maintenance runs carry :data:`MAINTENANCE_TAG`, which the run queue admits one at a
time; the sensor also skips while one is queued or running.

The vacuum is lite (``full=False``): it deletes only files the log removed, never a file
no commit named yet (one the Spark writer has put but not committed). Only the orphan
sweep vacuums in full, with a retention of a week, and no code passes
``enforce_retention_duration=False``.
"""

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    DefaultSensorStatus,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    Output,
    PartitionsDefinition,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    asset,
    job,
    op,
    sensor,
)
from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties

from finpipe import lake, summaries
from finpipe.settings import Settings
from finpipe_dagster.instance import LIVE_RUN_STATUS_FILTER as IN_PROGRESS
from finpipe_dagster.instance import MAINTENANCE_POOL, MAINTENANCE_TAG
from finpipe_dagster.lake.assets import COMPACTED_TRADES, PROCESSED_TRADES
from finpipe_dagster.partitions import partition_days, today_utc
from finpipe_dagster.resources import LakeTables

__all__ = ["COMPACTED_TRADES", "MAINTENANCE_POOL", "MAINTENANCE_TAG"]

MAINTENANCE_TAGS: Mapping[str, str] = {MAINTENANCE_TAG: "lake"}
"""Run tags of every run that commits maintenance to the lake (the run queue admits one)."""

OPEN_DAY_TARGET_BYTES = 32 * 1024 * 1024
"""The open day's compaction target: smaller files are binned into files of about this
size; a file this large is never rewritten again until the day closes."""

HOOKS = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)
"""As the writer commits: checkpoints at the table's interval, log cleanup only when
:func:`cleanup_log` says so (consumers of ``lake_log`` read the entries)."""


def maintenance_commit(operation: str) -> CommitProperties:
    """What a maintenance commit records in the table's history (``finpipe.maintenance``)."""
    return CommitProperties(custom_metadata={"finpipe.maintenance": operation})


@dataclass(frozen=True)
class OptimizeReport:
    files_removed: int = 0
    files_added: int = 0
    partitions_optimized: int = 0
    table_version: int | None = None

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], version: int) -> "OptimizeReport":
        return cls(
            int(metrics.get("numFilesRemoved") or 0),
            int(metrics.get("numFilesAdded") or 0),
            int(metrics.get("partitionsOptimized") or 0),
            version,
        )


def _day(column: str, day: dt.date) -> list[tuple[str, str, Any]]:
    return [(column, "=", day.isoformat())]


def z_order_day(table: DeltaTable, day: dt.date) -> OptimizeReport:
    """A closed day rewritten as few files per symbol, sorted by trade time (one commit,
    ``dataChange=false``; every partition of the day at once)."""
    metrics = table.optimize.z_order(
        ["trade_ts"],
        partition_filters=_day("trade_date", day),
        commit_properties=maintenance_commit("z_order"),
        post_commithook_properties=HOOKS,
    )
    return OptimizeReport.from_metrics(metrics, table.version())


def compact_day(
    table: DeltaTable,
    day: dt.date,
    *,
    column: str = "trade_date",
    target_size: int = OPEN_DAY_TARGET_BYTES,
) -> OptimizeReport:
    """The day's small files binned into files of about ``target_size`` (files already
    that large stay); nothing is committed when there is nothing to bin."""
    metrics = table.optimize.compact(
        partition_filters=_day(column, day),
        target_size=target_size,
        commit_properties=maintenance_commit("compact"),
        post_commithook_properties=HOOKS,
    )
    return OptimizeReport.from_metrics(metrics, table.version())


def vacuum(table: DeltaTable) -> list[str]:
    """Lite vacuum: deletes the files the log removed longer ago than the table's
    ``delta.deletedFileRetentionDuration`` (delta-rs refuses a shorter retention).
    Returns the files deleted."""
    return table.vacuum(
        retention_hours=None, dry_run=False, enforce_retention_duration=True, full=False
    )


def cleanup_log(table: DeltaTable) -> None:
    """Log entries older than the table's ``delta.logRetentionDuration`` removed (those a
    checkpoint made redundant)."""
    table.cleanup_metadata()


# --- closed days: ``compacted_trades`` ---------------------------------------------------


def compacted_trades(context: AssetExecutionContext, lake_tables: LakeTables) -> MaterializeResult:
    days = partition_days(list(context.partition_keys))
    open_days = [d for d in days if d >= today_utc()]
    if open_days:
        raise Failure(
            f"refusing to compact {[d.isoformat() for d in open_days]}: Spark still writes to "
            "an open day (lake_maintenance_job compacts it); compact days before today (UTC)"
        )
    table = lake_tables.trades_table().open()
    per_day: dict[str, dict[str, Any]] = {}
    for day in days:
        if table is None:
            per_day[day.isoformat()] = asdict(OptimizeReport())
            continue
        table.update_incremental()
        before = len(lake.table_files(table, [day]))
        report = z_order_day(table, day)
        files = lake.table_files(table, [day])
        per_day[day.isoformat()] = {
            **asdict(report),
            "files_before": before,
            "files_after": len(files),
            "rows": sum(f.rows for f in files),
        }
        context.log.info(f"compacted {day}: {per_day[day.isoformat()]}")
    return MaterializeResult(
        metadata={
            "files_before": sum(r.get("files_before", 0) for r in per_day.values()),
            "files_after": sum(r.get("files_after", 0) for r in per_day.values()),
            "rows": sum(r.get("rows", 0) for r in per_day.values()),
            "table_version": MetadataValue.int(table.version() if table is not None else -1),
            "per_day": MetadataValue.json(per_day),
        }
    )


def compacted_trades_asset(partitions: PartitionsDefinition) -> AssetsDefinition:
    """The asset over the code location's daily partitions (built at load)."""
    return asset(
        # The summaries too: a run that builds both compacts after they read the day.
        deps=[PROCESSED_TRADES, *summaries.NAMES],
        key=COMPACTED_TRADES,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        group_name="maintenance",
        kinds={"s3", "delta"},
        pool=MAINTENANCE_POOL,
        description=(
            "Closed days of processed_trades z-ordered by trade_ts (delta-rs optimize: a "
            "commit of dataChange=false), after the day's summaries; a late trade is folded "
            "in by running the day again. One maintenance operation at a time (pool "
            f"`{MAINTENANCE_POOL}`); replaced files go with the lake_maintenance_job's vacuum."
        ),
    )(compacted_trades)


# --- the open day and the tables' upkeep: ``lake_maintenance_job`` -------------------


def add_missing_properties(spec_table: lake.LakeTable, table: DeltaTable) -> list[str]:
    """The contract's properties that ``table`` lacks, set (one commit; none when it has
    them all). Returns their names."""
    missing = spec_table.missing_properties(table)
    if missing:
        table.alter.set_table_properties(
            missing,
            commit_properties=maintenance_commit("set_table_properties"),
            post_commithook_properties=HOOKS,
        )
    return sorted(missing)


@dataclass(frozen=True)
class TableUpkeep:
    table: str
    compaction: OptimizeReport | None
    files_vacuumed: int
    properties_set: tuple[str, ...] = ()


def maintain(lake_tables: LakeTables, day: dt.date) -> list[TableUpkeep]:
    """One maintenance pass over every table: the contract's missing properties set, then
    ``day``'s compaction (the lake's tables), lite vacuum, log cleanup. Tables not created
    yet are left alone."""
    found = []
    for spec_table, column in (
        (lake_tables.trades_table(), "trade_date"),
        (lake_tables.rejects_table(), "processed_date"),
        # A publish writes a summary's day as one file: nothing to compact.
        *((summary, None) for summary in lake_tables.summary_tables()),
    ):
        table = spec_table.open()
        if table is None:
            continue
        # First, so that the vacuum obeys the table's own retention, not delta-rs's week.
        properties = add_missing_properties(spec_table, table)
        report = compact_day(table, day, column=column) if column is not None else None
        deleted = vacuum(table)
        cleanup_log(table)
        found.append(TableUpkeep(spec_table.spec.name, report, len(deleted), tuple(properties)))
    return found


@op(
    description=(
        "The open day's small files compacted, then a lite vacuum and a log cleanup of every "
        "table of the lake and of the summaries (one maintenance operation at a time)."
    ),
    pool=MAINTENANCE_POOL,
)
def maintain_lake(context: OpExecutionContext, lake_tables: LakeTables) -> Output[None]:
    day = today_utc()
    upkeep = maintain(lake_tables, day)
    for found in upkeep:
        context.log.info(f"maintenance of {found.table} ({day}): {found}")
    return Output(
        None,
        metadata={
            "day": day.isoformat(),
            "files_compacted": sum(u.compaction.files_removed for u in upkeep if u.compaction),
            "files_vacuumed": sum(u.files_vacuumed for u in upkeep),
            "tables": MetadataValue.json([asdict(u) for u in upkeep]),
        },
    )


@job(
    tags=dict(MAINTENANCE_TAGS),
    description=(
        "The open day compacted (optimize.compact to OPEN_DAY_TARGET_BYTES), lite vacuum and "
        "log cleanup of the lake's tables and the summaries."
    ),
)
def lake_maintenance_job() -> None:
    maintain_lake()


def request_maintenance(context: SensorEvaluationContext) -> RunRequest | SkipReason:
    """One tick of ``lake_maintenance_sensor``: a run, unless a maintenance run is live."""
    running = context.instance.get_run_records(
        RunsFilter(tags={MAINTENANCE_TAG: MAINTENANCE_TAGS[MAINTENANCE_TAG]}, statuses=IN_PROGRESS),
        limit=1,
    )
    if running:
        return SkipReason(
            f"lake maintenance {running[0].dagster_run.run_id} still queued or running"
        )
    return RunRequest()


def build_lake_maintenance_sensor(settings: Settings) -> SensorDefinition:
    return sensor(
        job=lake_maintenance_job,
        name="lake_maintenance_sensor",
        minimum_interval_seconds=settings.lake_maintenance_sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Each tick (LAKE_MAINTENANCE_SENSOR_INTERVAL_SECONDS), one lake maintenance run; "
            "never while one is queued or running."
        ),
    )(request_maintenance)
