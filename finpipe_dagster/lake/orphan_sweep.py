"""The weekly orphan sweep: files in a table's folders that no commit names, deleted.

Such a file was put by a writer and never committed: a Spark batch whose driver died
before its commit or refused a stale one (``spark.sink``), a summary publish that failed
after writing its file. The lite vacuum of ``lake_maintenance_job`` also leaves behind
some files the log did remove: a checkpoint drops each removal once it is older than
``delta.deletedFileRetentionDuration``, so a replaced file whose removal expired between
two vacuums and was then checkpointed is named by nothing any more.

The lite vacuum cannot delete them: it cannot tell a file never to be committed from one a
writer is about to commit. The sweep tells them apart by age: a full vacuum
(``vacuum(full=True)``) deletes only files older than :data:`ORPHAN_SWEEP_RETENTION_HOURS`
(delta-rs ages a file by its last-modified time in the store), while the Spark writer
refuses to commit files written more than an hour before (``spark.sink``) and a publish
commits the file it has just written. The table's own retention stays enforced
(``enforce_retention_duration=True``).

A table whose folders hold files of the pre-Delta layout (a migration not finished) is
left alone: those files are rows ``make migrate-lake`` has still to convert.

``orphan_sweep_job`` sweeps every table (the lake's and the summaries') in one op that,
like every maintenance commit (a vacuum commits to the log too), runs in the pool
``lake_maintenance`` in a run tagged for the run queue's one maintenance run at a time
(``finpipe_dagster.lake.maintenance``); ``orphan_sweep_schedule`` starts it weekly.
"""

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from dagster import MetadataValue, OpExecutionContext, Output, job, op
from deltalake import DeltaTable

from finpipe import lake, lake_migration
from finpipe_dagster.instance import MAINTENANCE_POOL
from finpipe_dagster.lake.maintenance import HOOKS, MAINTENANCE_TAGS, maintenance_commit
from finpipe_dagster.resources import LakeTables

ORPHAN_SWEEP_RETENTION_HOURS = 7 * 24
"""A file no commit names is deleted once it is a week old: far beyond the hour after
which the Spark writer refuses to commit what it wrote (``spark.sink.MAX_UNCOMMITTED_SECONDS``)."""


def sweep_orphans(
    table: DeltaTable,
    *,
    dry_run: bool = True,
    retention_hours: int = ORPHAN_SWEEP_RETENTION_HOURS,
) -> list[str]:
    """Full vacuum: the files of ``table`` that no commit names (or that the log removed)
    older than ``retention_hours``, deleted (listed only, on a dry run). Returns their
    paths, relative to the table."""
    return table.vacuum(
        retention_hours=retention_hours,
        dry_run=dry_run,
        enforce_retention_duration=True,
        full=True,
        commit_properties=maintenance_commit("orphan_sweep"),
        post_commithook_properties=HOOKS,
    )


@dataclass(frozen=True)
class Sweep:
    table: str
    files_deleted: int
    pre_delta_files: int = 0
    """Files of the pre-Delta layout among the candidates: then the table is left alone."""


def sweep_tables(
    tables: Iterable[lake.LakeTable], *, retention_hours: int = ORPHAN_SWEEP_RETENTION_HOURS
) -> list[Sweep]:
    """Each table swept (tables not created yet are left alone). The op passes no
    ``retention_hours``: a shorter one is for tests, whose objects cannot be a week old."""
    swept = []
    for spec_table in tables:
        table = spec_table.open()
        if table is None:
            continue
        candidates = sweep_orphans(table, retention_hours=retention_hours)
        old = [path for path in candidates if lake_migration.is_pre_delta_file(path)]
        if old:
            swept.append(Sweep(spec_table.spec.name, 0, len(old)))
            continue
        # Nothing to delete: no second listing, no vacuum commits in the log.
        deleted = (
            sweep_orphans(table, dry_run=False, retention_hours=retention_hours)
            if candidates
            else []
        )
        swept.append(Sweep(spec_table.spec.name, len(deleted)))
    return swept


@op(
    description=(
        "Files no commit names and older than a week deleted from every table of the lake "
        "and of the summaries (a full vacuum; one maintenance operation at a time)."
    ),
    pool=MAINTENANCE_POOL,
)
def sweep_orphan_files(context: OpExecutionContext, lake_tables: LakeTables) -> Output[None]:
    swept = sweep_tables(lake_tables.tables())
    for found in swept:
        if found.pre_delta_files:
            context.log.warning(
                f"orphan sweep: {found.table} left alone, its folders hold "
                f"{found.pre_delta_files} file(s) of the pre-Delta layout; run "
                "`make migrate-lake` (docs/operations.md) to convert them"
            )
        else:
            context.log.info(f"orphan sweep: {found.files_deleted} file(s) of {found.table}")
    return Output(
        None,
        metadata={
            "retention_hours": ORPHAN_SWEEP_RETENTION_HOURS,
            "files_deleted": sum(s.files_deleted for s in swept),
            "tables": MetadataValue.json([asdict(s) for s in swept]),
        },
    )


@job(
    tags=dict(MAINTENANCE_TAGS),
    description=(
        "The orphan sweep: a full vacuum of every table, deleting files no commit names "
        "once they are a week old."
    ),
)
def orphan_sweep_job() -> None:
    sweep_orphan_files()
