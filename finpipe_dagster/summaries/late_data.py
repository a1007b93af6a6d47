"""Keeps each closed day's summaries and compaction in step with the lake, from its log.

Trades land in a day after it closed: stragglers after midnight, a backlog after an
outage, a replayed session from the past. The lake shows them at once; this sensor brings
the rest along. Each tick it asks the lake table's log what the versions since its cursor
added (``finpipe.lake_log.changes``: data-change files only, so a compaction is no news),
notes the closed days those files belong to with the newest version that added rows to
each, and compares that version, per day, with

* the lake version the day's summaries read (``lake_version`` in their latest
  materializations, see ``summaries/assets.py``), and
* the table version the day's compaction left (``table_version`` of its latest
  ``compacted_trades`` materialization),

and requests for the day:

* its summaries, when rows arrived after the version they read (or the day was never
  summarized, or summarized from another lake);
* its compaction, when rows arrived after its last compaction (or the day was never
  compacted and its close is overdue), once the newest of them is
  ``LATE_BATCH_SETTLE_SECONDS`` old;
* both as one ``close_day_job`` run (summaries first, then compaction) when both are due.

When the log cannot answer (no cursor yet, or entries older than the log retention are
gone, or the table was replaced), the sensor compares instead, for every closed day, the
rows the snapshot's files hold with the rows the summaries recorded (``lake_rows``).

The cursor keeps the version read and the days not yet in step, so a day stays requested
until durable state (the materializations) says it caught up: a run that failed leaves the
day behind, and it is requested again (after ``RETRY_BACKOFF``; never while a run of that
day is queued or running). The runs also carry Dagster run retries (``jobs.RETRY_TAGS``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
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
from deltalake import DeltaTable

from finpipe import lake, lake_log
from finpipe.settings import Settings, same_lake
from finpipe_dagster.instance import LIVE_RUN_STATUS_FILTER as IN_PROGRESS
from finpipe_dagster.lake.assets import COMPACTED_TRADES
from finpipe_dagster.partitions import first_day
from finpipe_dagster.resources import FinpipeSettings, LakeTables
from finpipe_dagster.summaries.assets import LAKE_KEY, LAKE_ROWS_KEY, LAKE_VERSION_KEY
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
COMPACTION_VERSION_KEY = "table_version"
"""Metadata of a ``compacted_trades`` materialization: the table version it left."""

# --- pure decisions ---------------------------------------------------------------------


@dataclass(frozen=True)
class LakeDay:
    """What the lake's log says of one closed day."""

    day: dt.date
    version: int  # the newest table version known to have added rows of the day
    added_at: dt.datetime | None  # when that version was committed (None: unknown)


@dataclass(frozen=True)
class DayWork:
    day: dt.date
    summaries: bool
    compaction: bool


def late_days(
    adds: Iterable[lake_log.FileAdd], first: dt.date, today: dt.date
) -> dict[dt.date, LakeDay]:
    """The closed days (from ``first``, before ``today``) the ``adds`` brought rows to,
    each with the newest version that did."""
    found: dict[dt.date, LakeDay] = {}
    for add in adds:
        day = add.trade_date
        if day is None or not first <= day < today:
            continue
        if day not in found or add.version >= found[day].version:
            found[day] = LakeDay(
                day, add.version, dt.datetime.fromtimestamp(add.commit_ms / 1000, dt.UTC)
            )
    return found


def merge(pending: dict[dt.date, LakeDay], found: dict[dt.date, LakeDay]) -> dict[dt.date, LakeDay]:
    """Days waiting from earlier ticks, with what this tick found (the newer version wins)."""
    merged = dict(pending)
    for day, state in found.items():
        if day not in merged or state.version >= merged[day].version:
            merged[day] = state
    return merged


def in_step(state: LakeDay, summarized: int | None, compacted: int | None) -> bool:
    """The day's summaries and compaction both hold every row the log reported."""
    return (
        summarized is not None
        and summarized >= state.version
        and compacted is not None
        and compacted >= state.version
    )


def decide(
    state: LakeDay,
    summarized: int | None,
    compacted: int | None,
    *,
    now: dt.datetime,
    settle: dt.timedelta,
    busy: bool,
    failed_at: dt.datetime | None,
) -> DayWork | None:
    """What a closed day needs now, or None. ``summarized``/``compacted``: the lake version
    its summaries read and the one its compaction left (None: never, or another lake)."""
    if busy or (failed_at is not None and now - failed_at < RETRY_BACKOFF):
        return None
    closes_at = dt.datetime.combine(state.day, dt.time(), dt.UTC) + dt.timedelta(days=1)
    settled = state.added_at is None or state.added_at <= now - settle
    # Rows after the day's last compaction; a day never compacted is the close schedule's
    # until its run had its chance (it failed, or the platform was down at that time).
    overdue = now >= closes_at + CLOSE_DELAY + RETRY_BACKOFF
    compaction = settled and (overdue if compacted is None else state.version > compacted)
    behind = summarized is None or state.version > summarized
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


# --- durable state: the lake, the materializations, the runs, the cursor ------------------


@dataclass(frozen=True)
class Cursor:
    version: int | None  # the table version read last (None: never)
    lake_uri: str | None
    pending: dict[dt.date, LakeDay]

    @staticmethod
    def parse(text: str | None) -> Cursor:
        try:
            raw = json.loads(text or "{}")
            pending = {
                dt.date.fromisoformat(day): LakeDay(
                    dt.date.fromisoformat(day),
                    int(version),
                    None if at is None else dt.datetime.fromtimestamp(at / 1000, dt.UTC),
                )
                for day, (version, at) in (raw.get("pending") or {}).items()
            }
            return Cursor(raw.get("version"), raw.get("lake"), pending)
        except (ValueError, TypeError, AttributeError):  # an older sensor's cursor
            return Cursor(None, None, {})

    def dump(self) -> str:
        pending = {
            day.isoformat(): [
                state.version,
                None if state.added_at is None else int(state.added_at.timestamp() * 1000),
            ]
            for day, state in sorted(self.pending.items())
        }
        return json.dumps({"version": self.version, "lake": self.lake_uri, "pending": pending})


def days_by_counts(
    snapshot: DeltaTable, days: list[dt.date], recorded: dict[str, int | None]
) -> dict[dt.date, LakeDay]:
    """The days whose rows in ``snapshot`` differ from the rows the summaries recorded
    (``recorded``: per day, None when never recorded), each at the snapshot's version."""
    rows: dict[dt.date, int] = {}
    newest: dict[dt.date, dt.datetime] = {}
    for file in lake.table_files(snapshot, days):
        rows[file.trade_date] = rows.get(file.trade_date, 0) + file.rows
        newest[file.trade_date] = max(file.modified, newest.get(file.trade_date, file.modified))
    version = snapshot.version()
    return {
        day: LakeDay(day, version, newest.get(day))
        for day in days
        if day in rows and recorded.get(day.isoformat()) != rows[day]
    }


def summarized(
    instance: DagsterInstance, days: list[str], lake_uri: str
) -> dict[str, tuple[int | None, int | None]]:
    """Per day, (the lake version all three summaries read, the lake rows they hold):
    the oldest of their latest materializations; (None, None) when one of them was never
    built from this lake."""
    per_asset = [
        _latest_metadata(instance, AssetKey(name), days, lake_uri, summary=True)
        for name in SUMMARY_KEYS
    ]
    found: dict[str, tuple[int | None, int | None]] = {}
    for day in days:
        records = [meta.get(day) for meta in per_asset]
        if any(r is None for r in records):
            found[day] = (None, None)
            continue
        versions = [r[0] for r in records if r is not None]
        rows = {r[1] for r in records if r is not None}
        found[day] = (min(versions), rows.pop() if len(rows) == 1 else None)
    return found


def compacted(instance: DagsterInstance, days: list[str]) -> dict[str, int]:
    """Per day, the table version the day's latest compaction left (days never compacted
    are missing)."""
    found = _latest_metadata(instance, COMPACTED_TRADES, days, None, summary=False)
    return {day: version for day, (version, _) in found.items()}


def _latest_metadata(
    instance: DagsterInstance,
    key: AssetKey,
    days: list[str],
    lake_uri: str | None,
    *,
    summary: bool,
) -> dict[str, tuple[int, int | None]]:
    latest = instance.get_latest_storage_id_by_partition(
        key, DagsterEventType.ASSET_MATERIALIZATION, set(days)
    )
    if not latest:
        return {}
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, storage_ids=list(latest.values())), limit=len(latest)
    ).records
    found: dict[str, tuple[int, int | None]] = {}
    for record in records:
        event = record.asset_materialization
        if event is None or event.partition is None:
            continue
        meta = event.metadata
        if not summary:
            version = meta.get(COMPACTION_VERSION_KEY)
            if version is not None and isinstance(version.value, int):
                found[event.partition] = (version.value, None)
            continue
        # Versions belong to one lake table: another lake's are no evidence.
        lake_meta, versions = meta.get(LAKE_KEY), meta.get(LAKE_VERSION_KEY)
        if lake_meta is None or not same_lake(lake_meta.value, lake_uri) or versions is None:
            continue
        version = (versions.value or {}).get(event.partition)
        rows_meta = meta.get(LAKE_ROWS_KEY)
        rows = (rows_meta.value or {}).get(event.partition) if rows_meta is not None else None
        if version is not None:
            found[event.partition] = (int(version), None if rows is None else int(rows))
    return found


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
    context: SensorEvaluationContext, finpipe: FinpipeSettings, lake_tables: LakeTables
) -> SensorResult | SkipReason:
    """One tick of ``late_data_summaries_sensor``."""
    settings = finpipe.load()
    now = dt.datetime.now(dt.UTC)
    today, first = now.date(), dt.date.fromisoformat(first_day(settings))
    table = lake_tables.trades_table()
    snapshot = table.open()
    if snapshot is None:
        return SkipReason(f"no lake table at {table.uri} yet")
    version = snapshot.version()
    cursor = Cursor.parse(context.cursor)
    same = cursor.version is not None and same_lake(cursor.lake_uri, settings.lake_uri)
    pending = cursor.pending if same else {}
    changes = None
    if same and cursor.version is not None and cursor.version <= version:
        changes = lake_log.changes(table, cursor.version, version)
    if changes is not None and not changes.truncated:
        found = late_days(changes.adds, first, today)
        how = f"the log of versions ({cursor.version}, {version}]"
    else:
        # No cursor, a lost log or another table: compare rows per day instead.
        days = [d for d in lake_days_of(snapshot) if first <= d < today]
        keys = [d.isoformat() for d in days]
        recorded = summarized(context.instance, keys, settings.lake_uri)
        never_compacted = set(keys) - set(compacted(context.instance, keys))
        found = days_by_counts(snapshot, days, {k: rows for k, (_, rows) in recorded.items()})
        for day in days:
            if day.isoformat() in never_compacted and day not in found:
                found[day] = LakeDay(day, version, None)
        how = f"row counts of {len(days)} closed day(s) at version {version}"
    pending = merge(pending, found)
    keys = [d.isoformat() for d in pending]
    summaries_read = summarized(context.instance, keys, settings.lake_uri)
    compactions = compacted(context.instance, keys)
    busy, failed = day_runs(context.instance, now - RETRY_BACKOFF)
    settle = dt.timedelta(seconds=settings.late_batch_settle_seconds)
    work: list[DayWork] = []
    for day, state in sorted(pending.items(), reverse=True):
        key = day.isoformat()
        if in_step(state, summaries_read[key][0], compactions.get(key)):
            del pending[day]
            continue
        found_work = decide(
            state,
            summaries_read[key][0],
            compactions.get(key),
            now=now,
            settle=settle,
            busy=key in busy,
            failed_at=failed.get(key),
        )
        if found_work is not None:
            work.append(found_work)
    new_cursor = Cursor(version, settings.lake_uri, pending).dump()
    work = work[:MAX_REQUESTS_PER_TICK]
    if not work:
        context.update_cursor(new_cursor)
        if pending:
            return SkipReason(
                f"{len(pending)} closed day(s) wait for a run in progress, for the backoff "
                f"after a failed one ({RETRY_BACKOFF}), for their late rows to settle or for "
                f"their close (read {how})"
            )
        return SkipReason(f"closed days of the lake: {IN_STEP} (read {how})")
    context.log.info(
        f"closed days behind the lake ({how}): "
        + ", ".join(
            f"{w.day} ({'summaries' if w.summaries else ''}"
            f"{'+' if w.summaries and w.compaction else ''}"
            f"{'compaction' if w.compaction else ''})"
            for w in work
        )
    )
    return SensorResult(run_requests=[run_request(w) for w in work], cursor=new_cursor)


def lake_days_of(snapshot: DeltaTable) -> list[dt.date]:
    """The days the snapshot holds rows of (its partitions)."""
    return sorted({dt.date.fromisoformat(p["trade_date"]) for p in snapshot.partitions()})


def build_late_data_summaries_sensor(settings: Settings) -> SensorDefinition:
    return sensor(
        jobs=[summaries_job, close_day_job],
        name="late_data_summaries_sensor",
        minimum_interval_seconds=settings.late_data_sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Keeps closed days' summaries and compaction in step with the lake's log: rebuilds "
            "a day's summaries when rows arrived after the version they read, compacts late "
            "rows once settled, and requests a failed day again."
        ),
    )(request_late_days)
