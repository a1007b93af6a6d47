"""Keeps each closed day's summaries and compaction in step with the lake, from durable state.

Trades land in a day after it closed: stragglers after midnight, a backlog after an
outage, a replayed session from the past. The lake shows them at once (see
``finpipe.contracts.visible_object_names``); this sensor brings the rest along. Each tick
it compares, for every closed day in the lake,

* the newest batch per symbol folder the lake holds (one listing of the day), with
* the newest batch per symbol the day's summaries read (``lake_batch_ids`` in their
  latest materializations, see ``summaries/assets.py``),

and requests for the day:

* its summaries, when the lake holds a batch they did not read (or the day was never
  summarized, or summarized from another lake);
* its compaction, when batch files sit in the day (beside a compacted file, or in a day
  whose close is overdue) and the newest is ``LATE_BATCH_SETTLE_SECONDS`` old, or when
  objects a compaction replaced are past ``COMPACTION_GRACE_SECONDS``;
* both as one ``close_day_job`` run (summaries first, then compaction) when both are due.

Nothing lives in process memory, and the cursor holds nothing: a restart of Spark, of the
daemon or of this sensor forgets nothing, and a run that failed leaves the day behind, so
the day is requested again (after ``RETRY_BACKOFF``; never while a run of that day is
queued or running). The runs also carry Dagster run retries (``jobs.RETRY_TAGS``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from finpipe import contracts, lake
from finpipe.settings import Settings, same_lake
from finpipe_dagster.instance import LIVE_RUN_STATUS_FILTER as IN_PROGRESS
from finpipe_dagster.lake.compaction import COMPACTED_TRADES, expired_leftovers
from finpipe_dagster.partitions import first_day
from finpipe_dagster.resources import FinpipeSettings
from finpipe_dagster.summaries.assets import BATCH_IDS_KEY, LAKE_KEY
from finpipe_dagster.summaries.jobs import (
    REFRESH_TAG,
    RETRY_TAGS,
    SUMMARY_KEYS,
    close_day_job,
    summaries_job,
)
from finpipe_dagster.summaries.schedules import CLOSE_DELAY

PARTITION_TAG = "dagster/partition"
RETRY_BACKOFF = dt.timedelta(minutes=5)
"""After a run of a day failed (and its run retries, if any, were used up), wait this long
before requesting the day again: a fault that persists gets a run every few minutes, not
every tick."""
MAX_REQUESTS_PER_TICK = 8
"""Newest days first; the rest follow on later ticks (a replay of many past days, or the
first tick after an upgrade, must not flood the run queue)."""
IN_STEP = "all in step"

# --- pure decisions ---------------------------------------------------------------------


@dataclass(frozen=True)
class LakeDay:
    """What one day of the lake holds, from a listing of all its objects."""

    day: dt.date
    batch_ids: dict[str, int]  # newest batch per symbol the reading rule shows
    pending_since: dt.datetime | None  # LastModified of the newest visible batch file
    compacted: bool  # a folder of the day holds the close's compacted file
    expired_leftovers: int  # replaced objects past the grace period


@dataclass(frozen=True)
class DayWork:
    day: dt.date
    summaries: bool
    compaction: bool


def lake_day(
    day: dt.date, objects: Iterable[lake.LakeFile], now: dt.datetime, grace: dt.timedelta
) -> LakeDay:
    folders: dict[str, dict[str, lake.LakeFile]] = {}
    for file in objects:
        folders.setdefault(file.symbol, {})[file.name] = file
    batch_ids: dict[str, int] = {}
    pending: list[dt.datetime] = []
    compacted = False
    expired = 0
    for symbol, files in folders.items():
        visible = [files[n] for n in contracts.visible_object_names(files)]
        batch_ids[symbol] = max(f.batch_id for f in visible)
        pending += [f.modified or now for f in visible if f.name.startswith("batch-")]
        # Closed by its compaction (``compacted-upto-<N>``, the range 0..N); the rolling
        # compaction's segments of the open day do not count: the close still has to run.
        compacted = compacted or any(f.name.startswith("compacted-upto-") for f in visible)
        expired += len(
            expired_leftovers({n: f.modified or now for n, f in files.items()}, now, grace)
        )
    return LakeDay(
        day, dict(sorted(batch_ids.items())), max(pending, default=None), compacted, expired
    )


def summaries_behind(lake_ids: Mapping[str, int], summarized: Mapping[str, int] | None) -> bool:
    """True when the lake holds a batch the summaries did not read (or they never read it)."""
    if summarized is None:
        return True
    return any(batch > summarized.get(symbol, -1) for symbol, batch in lake_ids.items())


def decide(
    state: LakeDay,
    summarized: Mapping[str, int] | None,
    *,
    now: dt.datetime,
    settle: dt.timedelta,
    busy: bool,
    failed_at: dt.datetime | None,
) -> DayWork | None:
    """What a closed day needs now, or None."""
    if busy or (failed_at is not None and now - failed_at < RETRY_BACKOFF):
        return None
    closes_at = dt.datetime.combine(state.day, dt.time(), dt.UTC) + dt.timedelta(days=1)
    settled = state.pending_since is not None and state.pending_since <= now - settle
    # A day never compacted is the close schedule's until its run had its chance (it
    # failed, or the platform was down at that time).
    overdue = now >= closes_at + CLOSE_DELAY + RETRY_BACKOFF
    compaction = state.expired_leftovers > 0 or (settled and (state.compacted or overdue))
    behind = summaries_behind(state.batch_ids, summarized)
    if not (behind or compaction):
        return None
    return DayWork(state.day, behind, compaction)


def run_request(work: DayWork) -> RunRequest:
    day = work.day.isoformat()
    if work.summaries and work.compaction:
        return RunRequest(
            job_name=close_day_job.name, partition_key=day, tags={REFRESH_TAG: "close"}
        )
    if work.compaction:
        return RunRequest(
            job_name=close_day_job.name,
            partition_key=day,
            asset_selection=[COMPACTED_TRADES],
            tags={REFRESH_TAG: "compact"},
        )
    return RunRequest(
        job_name=summaries_job.name, partition_key=day, tags={REFRESH_TAG: "late", **RETRY_TAGS}
    )


# --- durable state: the lake, the summaries' materializations, the runs -----------------


def closed_lake_days(settings: Settings, now: dt.datetime) -> list[LakeDay]:
    first = dt.date.fromisoformat(first_day(settings))
    today = now.date()
    days = [d for d in lake.lake_days(settings) if first <= d < today]
    grace = dt.timedelta(seconds=settings.compaction_grace_seconds)
    by_day: dict[dt.date, list[lake.LakeFile]] = {d: [] for d in days}
    for file in lake.list_lake_objects(settings, days) if days else []:
        by_day[file.trade_date].append(file)
    return [lake_day(d, files, now, grace) for d, files in by_day.items() if files]


def summarized_batch_ids(
    instance: DagsterInstance, days: list[str], lake_uri: str
) -> dict[str, dict[str, int] | None]:
    """Per day, the newest batch per symbol that all three summaries read (their latest
    materializations); None when one of them was never built from this lake."""
    per_asset = [
        _latest_batch_ids(instance, AssetKey(name), days, lake_uri) for name in SUMMARY_KEYS
    ]
    return {day: _common([found.get(day) for found in per_asset]) for day in days}


def _latest_batch_ids(
    instance: DagsterInstance, key: AssetKey, days: list[str], lake_uri: str
) -> dict[str, dict[str, int]]:
    latest = instance.get_latest_storage_id_by_partition(
        key, DagsterEventType.ASSET_MATERIALIZATION, set(days)
    )
    if not latest:
        return {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, storage_ids=list(latest.values())), limit=len(latest)
    ).records
    found = {}
    for record in records:
        event = record.asset_materialization
        if event is None or event.partition is None:
            continue
        lake_meta, ids_meta = event.metadata.get(LAKE_KEY), event.metadata.get(BATCH_IDS_KEY)
        # Batch ids belong to one lake (one checkpoint): another lake's are no evidence.
        if lake_meta is not None and same_lake(lake_meta.value, lake_uri) and ids_meta is not None:
            ids = (ids_meta.value or {}).get(event.partition)
            if ids is not None:
                found[event.partition] = {str(s): int(b) for s, b in ids.items()}
    return found


def _common(found: list[dict[str, int] | None]) -> dict[str, int] | None:
    if any(ids is None for ids in found):
        return None
    symbols = set().union(*found)  # type: ignore[arg-type]
    return {s: min(ids.get(s, -1) for ids in found if ids is not None) for s in sorted(symbols)}


def day_runs(
    instance: DagsterInstance, since: dt.datetime
) -> tuple[set[str], dict[str, dt.datetime]]:
    """(days with a summaries or close-day run queued or running, days whose latest such
    run, updated since ``since``, failed, with the time it failed)."""
    jobs = {summaries_job.name, close_day_job.name}
    busy = {
        r.dagster_run.tags[PARTITION_TAG]
        for r in instance.get_run_records(RunsFilter(statuses=IN_PROGRESS))
        if r.dagster_run.job_name in jobs and PARTITION_TAG in r.dagster_run.tags
    }
    latest: dict[str, tuple[dt.datetime, DagsterRunStatus]] = {}
    for r in instance.get_run_records(RunsFilter(updated_after=since)):
        day = r.dagster_run.tags.get(PARTITION_TAG)
        if r.dagster_run.job_name not in jobs or day is None:
            continue
        updated = r.update_timestamp.astimezone(dt.UTC)
        if day not in latest or updated > latest[day][0]:
            latest[day] = (updated, r.dagster_run.status)
    failed = {d: at for d, (at, status) in latest.items() if status == DagsterRunStatus.FAILURE}
    return busy, failed


def request_late_days(
    context: SensorEvaluationContext, finpipe: FinpipeSettings
) -> SensorResult | SkipReason:
    """One tick of ``late_data_summaries_sensor``."""
    settings = finpipe.load()
    now = dt.datetime.now(dt.UTC)
    states = closed_lake_days(settings, now)
    summarized = summarized_batch_ids(
        context.instance, [s.day.isoformat() for s in states], settings.lake_uri
    )
    busy, failed = day_runs(context.instance, now - RETRY_BACKOFF)
    settle = dt.timedelta(seconds=settings.late_batch_settle_seconds)
    work = [
        found
        for state in sorted(states, key=lambda s: s.day, reverse=True)
        if (
            found := decide(
                state,
                summarized.get(state.day.isoformat()),
                now=now,
                settle=settle,
                busy=state.day.isoformat() in busy,
                failed_at=failed.get(state.day.isoformat()),
            )
        )
    ][:MAX_REQUESTS_PER_TICK]
    if not work:
        waiting = sum(1 for s in states if s.day.isoformat() in busy or s.day.isoformat() in failed)
        if waiting:
            return SkipReason(
                f"{waiting} of {len(states)} closed day(s) wait for a run in progress or for "
                f"the backoff after a failed one ({RETRY_BACKOFF})"
            )
        return SkipReason(f"{len(states)} closed day(s) in the lake: {IN_STEP}")
    context.log.info(
        "closed days behind the lake: "
        + ", ".join(
            f"{w.day} ({'summaries' if w.summaries else ''}"
            f"{'+' if w.summaries and w.compaction else ''}"
            f"{'compaction' if w.compaction else ''})"
            for w in work
        )
    )
    return SensorResult(run_requests=[run_request(w) for w in work])


def build_late_data_summaries_sensor(settings: Settings) -> SensorDefinition:
    return sensor(
        jobs=[summaries_job, close_day_job],
        name="late_data_summaries_sensor",
        minimum_interval_seconds=settings.late_data_sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Keeps closed days' summaries and compaction in step with the lake: rebuilds a "
            "day's summaries when it holds batches they did not read, compacts late batches, "
            "deletes replaced objects after their grace period, and requests a failed day again."
        ),
    )(request_late_days)
