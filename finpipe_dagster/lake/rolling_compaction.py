"""Rolling compaction of the open day: batch files a few minutes old fold into segments.

Spark writes one object per symbol every trigger, so an open day would grow to tens of
thousands of objects per symbol by midnight. Every minute (``rolling_compaction_sensor``,
``ROLLING_COMPACTION_SENSOR_INTERVAL_SECONDS``) this job takes, in each symbol folder of
today, the visible batch files at least ``ROLLING_COMPACTION_MIN_AGE_SECONDS`` old and
folds them, together with the folder's newest segment while that spans fewer than
``ROLLING_COMPACTION_SEGMENT_BATCHES`` batch ids, into one
``compacted-<first>-<last>.parquet`` (one PUT). The reading rule
(``contracts.visible_object_names``) switches readers to it atomically: the new segment
covers exactly the objects it was built from, so it hides them and nothing else. The
replaced objects stay for ``COMPACTION_GRACE_SECONDS`` and a later run deletes them.

A run is one contiguous stretch of the folder's visible objects: a young batch ends it,
because a segment that reached past it would hide rows it does not hold. Runs of one
folder never overlap partially as long as one compaction of a day runs at a time: the
sensor requests a run only when none is in progress, and the close of a day
(``compacted_trades``) refuses the open day.
"""

import concurrent.futures
import datetime as dt
import posixpath
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow.fs as pafs
from dagster import (
    DefaultSensorStatus,
    OpExecutionContext,
    Output,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    job,
    op,
    sensor,
)

from finpipe import contracts, lake
from finpipe.settings import Settings
from finpipe_dagster.instance import LIVE_RUN_STATUS_FILTER as IN_PROGRESS
from finpipe_dagster.lake.compaction import compact_folder, expired_leftovers
from finpipe_dagster.partitions import today_utc
from finpipe_dagster.resources import FinpipeSettings, LakeS3Resource

FOLDERS_AT_ONCE = 4
CLOSED_PREFIX = "compacted-upto-"  # the close's form: never grown further


@dataclass(frozen=True)
class RollingReport:
    objects_before: int = 0
    segments_written: int = 0
    batches_folded: int = 0
    rows: int = 0
    leftovers_deleted: int = 0

    def __add__(self, other: "RollingReport") -> "RollingReport":
        return RollingReport(
            *(getattr(self, f) + getattr(other, f) for f in RollingReport.__dataclass_fields__)
        )


def rolling_runs(
    modified: Mapping[str, dt.datetime],
    now: dt.datetime,
    *,
    min_age: dt.timedelta,
    segment_batches: int,
) -> list[list[str]]:
    """The runs of one folder to fold into one segment each (names, in batch order).

    ``modified`` maps each object name of the folder to its LastModified. A run starts at
    an old batch file or at the folder's segment that is still open (spans fewer than
    ``segment_batches`` ids), takes the old batch files after it, and ends at a young
    batch, at a full segment, or where it would span more than ``segment_batches`` ids.
    Only runs holding at least one batch file are returned.
    """
    parsed = {n: contracts.parse_lake_object_name(n) for n in modified}
    visible = sorted(contracts.visible_object_names(modified), key=lambda n: parsed[n].first)
    runs: list[list[str]] = []
    current: list[str] = []
    for name in visible:
        found = parsed[name]
        assert found is not None
        run_first = parsed[current[0]].first if current else found.first
        if found.compacted:
            runs.append(current)
            spans = found.batch_id - found.first + 1
            open_segment = not name.startswith(CLOSED_PREFIX) and spans < segment_batches
            current = [name] if open_segment else []
        elif modified[name] > now - min_age:
            break  # everything from here on stays batch files for now
        elif found.batch_id - run_first + 1 > segment_batches:
            runs.append(current)
            current = [name]
        else:
            current.append(name)
    runs.append(current)
    return [run for run in runs if any(not parsed[n].compacted for n in run)]


def segment_name(run: list[str]) -> str:
    first = contracts.parse_lake_object_name(run[0])
    last = contracts.parse_lake_object_name(run[-1])
    assert first is not None and last is not None
    return contracts.compacted_segment_name(first.first, last.batch_id)


def roll_day(
    settings: Settings,
    fs: pafs.FileSystem,
    lake_s3: LakeS3Resource,
    day: dt.date,
    now: dt.datetime | None = None,
) -> RollingReport:
    """One rolling compaction of ``day``: every folder's runs, then its expired leftovers."""
    folders: dict[str, dict[str, lake.LakeFile]] = defaultdict(dict)
    for file in lake.list_lake_objects(settings, [day], filesystem=fs):
        folders[posixpath.dirname(file.path)][file.name] = file
    report = RollingReport(objects_before=sum(len(f) for f in folders.values()))
    # Folders are independent: a few at once keep the object store busy while one waits.
    with concurrent.futures.ThreadPoolExecutor(FOLDERS_AT_ONCE) as pool:
        for found in pool.map(
            lambda item: _roll_folder(settings, fs, lake_s3, item[0], item[1], now),
            sorted(folders.items()),
        ):
            report += found
    return report


def _roll_folder(
    settings: Settings,
    fs: pafs.FileSystem,
    lake_s3: LakeS3Resource,
    folder: str,
    objects: dict[str, lake.LakeFile],
    now: dt.datetime | None,
) -> RollingReport:
    moment = now or dt.datetime.now(dt.UTC)
    modified = {n: _utc(f.modified) or moment for n, f in objects.items()}
    runs = rolling_runs(
        modified,
        moment,
        min_age=dt.timedelta(seconds=settings.rolling_compaction_min_age_seconds),
        segment_batches=settings.rolling_compaction_segment_batches,
    )
    rows = folded = 0
    for run in runs:
        name = segment_name(run)
        _, written, _ = compact_folder(fs, [objects[n].path for n in run], name)
        rows += written
        folded += sum(1 for n in run if n.startswith("batch-"))
        modified[name] = moment  # it hides its inputs from now on
    grace = dt.timedelta(seconds=settings.compaction_grace_seconds)
    expired = expired_leftovers(modified, moment, grace)
    if expired:
        bucket_relative = folder.split("/", 1)[1]
        lake_s3.delete_keys([f"{bucket_relative}/{n}" for n in expired])
    return RollingReport(0, len(runs), folded, rows, len(expired))


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)


@op(description="Folds today's batch files older than the minimum age into segments.")
def compact_open_day(
    context: OpExecutionContext, finpipe: FinpipeSettings, lake_s3: LakeS3Resource
) -> Output[None]:
    settings = finpipe.load()
    day = today_utc()
    report = lake.read_relisting(
        lambda: roll_day(settings, lake_s3.filesystem(), lake_s3, day),
        what=f"rolling compaction of {day}",
    )
    context.log.info(f"rolling compaction of {day}: {report}")
    return Output(None, metadata={"day": day.isoformat(), **report.__dict__})


@job(
    description=(
        "Rolling compaction of the open day: batch files older than "
        "ROLLING_COMPACTION_MIN_AGE_SECONDS fold into compacted segments."
    )
)
def rolling_compaction_job() -> None:
    compact_open_day()


def request_rolling_compaction(context: SensorEvaluationContext) -> RunRequest | SkipReason:
    """One tick of ``rolling_compaction_sensor``."""
    running = context.instance.get_run_records(
        RunsFilter(job_name=rolling_compaction_job.name, statuses=IN_PROGRESS), limit=1
    )
    if running:
        return SkipReason(f"rolling compaction {running[0].dagster_run.run_id} still running")
    return RunRequest()


def build_rolling_compaction_sensor(settings: Settings) -> SensorDefinition:
    return sensor(
        job=rolling_compaction_job,
        name="rolling_compaction_sensor",
        minimum_interval_seconds=settings.rolling_compaction_sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Each tick, one rolling compaction of the open day (never two at once).",
    )(request_rolling_compaction)
