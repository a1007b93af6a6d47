"""Everything the dashboard reads, fetched once per refresh into an in-memory snapshot.

Each summary is a Delta table (``finpipe.summaries``). The store keeps each table open
and, per refresh, asks its log for a newer version (one listing of ``_delta_log``); only
when the version changed does it look at which days' files changed, and it re-reads
those days alone. "Refreshed at" is the commit time of today's newest publish. The live
lake is read through :class:`LakeTail`, which only fetches the objects written since the
previous refresh. Readers never wait for a writer: a summary's day is replaced in one
commit and lake objects are immutable.

Unreachable storage surfaces as :class:`StoreUnavailable`, whose message says what to
check, so the page can show it instead of a stack trace.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import structlog
from deltalake import DeltaTable

from finpipe import summaries
from finpipe.delta_storage import storage_options
from finpipe.lake import s3_filesystem
from finpipe.settings import Settings
from streamlit_app.lake_tail import TAIL_SCHEMA, LakeTail

log = structlog.get_logger(__name__)

AVAILABLE_DAYS_TTL_SECONDS = 30.0
# Commits read back for the publish times of a table opened for the first time (later,
# only the commits since the version the store had).
FIRST_HISTORY_COMMITS = 20
# An interactive reader: a store that does not answer fails the refresh, not the page.
TIMEOUT_SECONDS = 10.0


class StoreUnavailable(RuntimeError):
    """The object store cannot be read; the message is meant for the page."""


@dataclass
class Snapshot:
    """What one refresh of the page shows: the summaries of some days plus the live tail."""

    now: dt.datetime
    today: dt.date
    ohlcv: pa.Table
    daily: pa.Table
    latest: pa.Table
    tail: pa.Table
    tail_cutoff: dt.datetime | None  # None when the tail was not read
    summaries_refreshed_at: dt.datetime | None
    connection: duckdb.DuckDBPyConnection | None = field(default=None, repr=False)


def empty_snapshot(now: dt.datetime) -> Snapshot:
    return Snapshot(
        now=now,
        today=now.date(),
        ohlcv=summaries.SCHEMAS[summaries.OHLCV_1M].empty_table(),
        daily=summaries.SCHEMAS[summaries.DAILY_SYMBOL_STATS].empty_table(),
        latest=summaries.SCHEMAS[summaries.LATEST_PRICES].empty_table(),
        tail=TAIL_SCHEMA.empty_table(),
        tail_cutoff=None,
        summaries_refreshed_at=None,
    )


def unreachable_message(settings: Settings, exc: BaseException) -> str:
    return (
        f"Cannot read the lake at S3_ENDPOINT_URL={settings.s3_endpoint_url} "
        f"(bucket {settings.s3_bucket}): {type(exc).__name__}: {str(exc).splitlines()[0][:200]}. "
        "Is MinIO running (`make status`), and are S3_ENDPOINT_URL and the keys right?"
    )


@dataclass
class _SummaryTable:
    """What the store keeps of one summary table between refreshes."""

    delta: DeltaTable | None = None
    version: int | None = None
    updated: float = 0.0  # time.monotonic() of the last look at its log
    files: dict[dt.date, frozenset[str]] = field(default_factory=dict)
    rows: dict[dt.date, tuple[frozenset[str], pa.Table]] = field(default_factory=dict)
    published_at: dict[dt.date, dt.datetime] = field(default_factory=dict)
    layout_checked: bool = False


class Store:
    """One per settings and process; safe to share between Streamlit sessions."""

    SUMMARY_NAMES = summaries.NAMES

    def __init__(
        self,
        settings: Settings,
        *,
        filesystem: pafs.FileSystem | None = None,
        tail: LakeTail | None = None,
    ) -> None:
        self.settings = settings
        self._fs = filesystem or s3_filesystem(settings)
        self._options = storage_options(settings, timeout_seconds=TIMEOUT_SECONDS, max_retries=0)
        self.tail = tail or LakeTail(settings, filesystem=self._fs)
        self._tables = {name: _SummaryTable() for name in self.SUMMARY_NAMES}
        # Held while a table is brought up to date: sessions refreshing at once read a
        # changed day once, and the second finds it cached.
        self._lock = threading.Lock()

    def snapshot(
        self, days: Iterable[dt.date], now: dt.datetime | None = None, *, with_tail: bool = True
    ) -> Snapshot:
        """Summaries of ``days`` (today is always included) and, optionally, the lake tail."""
        now = now or dt.datetime.now(dt.UTC)
        wanted = sorted({now.date(), *days})
        try:
            tables, refreshed = self._read_summaries(wanted, now.date())
            tail = self.tail.read(now) if with_tail else TAIL_SCHEMA.empty_table()
        except StoreUnavailable:
            raise
        except Exception as exc:  # delta-rs, obstore and pyarrow raise OSError or their own errors
            log.warning("dashboard.store_unreachable", error=str(exc)[:300])
            raise StoreUnavailable(unreachable_message(self.settings, exc)) from exc
        return Snapshot(
            now=now,
            today=now.date(),
            ohlcv=tables[summaries.OHLCV_1M],
            daily=tables[summaries.DAILY_SYMBOL_STATS],
            latest=tables[summaries.LATEST_PRICES],
            tail=tail,
            tail_cutoff=self.tail.cutoff(now) if with_tail else None,
            summaries_refreshed_at=refreshed,
        )

    def available_days(self) -> list[dt.date]:
        """Days with published 1-minute OHLCV bars (the table's partitions), newest first;
        the table's log is looked at again after ``AVAILABLE_DAYS_TTL_SECONDS``."""
        try:
            with self._lock:
                table = self._tables[summaries.OHLCV_1M]
                if time.monotonic() - table.updated >= AVAILABLE_DAYS_TTL_SECONDS:
                    self._update(summaries.OHLCV_1M, table)
                days = summaries.published_days(table.delta) if table.delta else []
        except Exception as exc:
            raise StoreUnavailable(unreachable_message(self.settings, exc)) from exc
        return sorted(days, reverse=True)

    def _read_summaries(
        self, days: list[dt.date], today: dt.date
    ) -> tuple[dict[str, pa.Table], dt.datetime | None]:
        tables: dict[str, pa.Table] = {}
        refreshed: dt.datetime | None = None
        with self._lock:
            for name, table in self._tables.items():
                self._update(name, table)
                tables[name] = self._days(name, table, days)
                at = table.published_at.get(today)
                if at is not None:
                    refreshed = max(refreshed, at) if refreshed else at
        return tables, refreshed

    def _update(self, name: str, table: _SummaryTable) -> None:
        """Bring ``table`` to the newest version of its log (open it on first use)."""
        if table.delta is None:
            table.delta = summaries.open_table(self.settings, name, options=self._options)
            if table.delta is None:
                self._check_layout(name, table)
        else:
            table.delta.update_incremental()
        table.updated = time.monotonic()
        version = table.delta.version() if table.delta is not None else None
        if table.delta is None or version == table.version:
            return
        known = table.version
        commits = (
            version - known if known is not None and version > known else FIRST_HISTORY_COMMITS
        )
        table.published_at.update(summaries.publish_times(table.delta, commits))
        table.files = summaries.files_by_day(table.delta)
        table.rows = {d: r for d, r in table.rows.items() if d in table.files}
        table.version = version

    def _days(self, name: str, table: _SummaryTable, days: list[dt.date]) -> pa.Table:
        """The rows of ``days``: cached where a day's files did not change, else read (all
        changed days in one scan of the table's snapshot)."""
        stale = [
            d for d in days if d in table.files and table.rows.get(d, (None,))[0] != table.files[d]
        ]
        if stale and table.delta is not None:
            fresh = summaries.day_rows(table.delta, name, stale)
            for day in stale:
                one = fresh.filter(pc.equal(fresh[summaries.PARTITION_COLUMN], pa.scalar(day)))
                table.rows[day] = (table.files[day], one)
        found = [table.rows[d][1] for d in days if d in table.rows]
        return pa.concat_tables(found) if found else summaries.SCHEMAS[name].empty_table()

    def _check_layout(self, name: str, table: _SummaryTable) -> None:
        """Once per table that is not there: say so when it is in the layout before Delta."""
        if table.layout_checked:
            return
        old = summaries.pre_delta_days(self.settings, name)
        table.layout_checked = True
        if old:
            log.warning(
                "dashboard.summaries_before_delta",
                message=summaries.pre_delta_message(self.settings, name, old),
            )


_SHARED: dict[str, Store] = {}
_SHARED_LOCK = threading.Lock()


def store_identity(settings: Settings) -> str:
    """What makes two stores different: the storage location and the tail's window."""
    return "|".join(
        (
            settings.s3_endpoint_url,
            settings.s3_bucket,
            settings.lake_prefix,
            settings.summaries_prefix,
            str(settings.dashboard_tail_minutes),
        )
    )


def shared_store(settings: Settings) -> Store:
    """The process's one store for these settings: every session's page and the launcher's
    warm-up (``serve.py``) share it, so it keeps its caches between them."""
    identity = store_identity(settings)
    with _SHARED_LOCK:
        if identity not in _SHARED:
            _SHARED[identity] = Store(settings)
        return _SHARED[identity]
