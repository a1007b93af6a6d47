"""Everything the dashboard reads, fetched once per refresh into an in-memory snapshot.

The summaries are small (one object per summary and day) and are re-read only when
their object changed (compared by modification time), so a refresh costs one metadata
request per summary and day. The live lake is read through :class:`LakeTail`, which
only fetches the objects written since the previous refresh. Readers never wait for a
writer: summaries are published with one atomic PUT and lake objects are immutable.

Unreachable storage surfaces as :class:`StoreUnavailable`, whose message says what to
check, so the page can show it instead of a stack trace.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import structlog

from finpipe import summaries
from finpipe.lake import s3_filesystem
from finpipe.settings import Settings
from streamlit_app.lake_tail import TAIL_SCHEMA, LakeTail

log = structlog.get_logger(__name__)

AVAILABLE_DAYS_TTL_SECONDS = 30.0


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
        self.tail = tail or LakeTail(settings, filesystem=self._fs)
        self._summaries: dict[tuple[str, dt.date], tuple[int, pa.Table]] = {}
        self._days: tuple[float, list[dt.date]] | None = None
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
        except Exception as exc:  # pyarrow raises OSError, boto3 its own error classes
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
        """Days with a published 1-minute OHLCV partition, newest first (cached briefly)."""
        with self._lock:
            if self._days and time.monotonic() - self._days[0] < AVAILABLE_DAYS_TTL_SECONDS:
                return self._days[1]
        base = f"{self.settings.s3_bucket}/{self.settings.summaries_prefix}/{summaries.OHLCV_1M}"
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        except Exception as exc:
            raise StoreUnavailable(unreachable_message(self.settings, exc)) from exc
        days: list[dt.date] = []
        for info in infos:
            name = info.base_name
            if info.type == pafs.FileType.Directory and name.startswith("trade_date="):
                try:
                    days.append(dt.date.fromisoformat(name.removeprefix("trade_date=")))
                except ValueError:
                    continue
        days.sort(reverse=True)
        with self._lock:
            self._days = (time.monotonic(), days)
        return days

    def _read_summaries(
        self, days: list[dt.date], today: dt.date
    ) -> tuple[dict[str, pa.Table], dt.datetime | None]:
        wanted = [(name, day) for name in self.SUMMARY_NAMES for day in days]
        keys = [summaries.partition_key(self.settings, name, day) for name, day in wanted]
        infos = self._fs.get_file_info(keys)
        parts: dict[str, list[pa.Table]] = {name: [] for name in self.SUMMARY_NAMES}
        refreshed: dt.datetime | None = None
        for (name, day), key, info in zip(wanted, keys, infos, strict=True):
            if info.type != pafs.FileType.File:
                continue
            parts[name].append(self._summary_table(name, day, key, info))
            if day == today and info.mtime is not None:
                mtime = info.mtime.astimezone(dt.UTC)
                refreshed = max(refreshed, mtime) if refreshed else mtime
        tables = {
            name: pa.concat_tables(found) if found else summaries.SCHEMAS[name].empty_table()
            for name, found in parts.items()
        }
        return tables, refreshed

    def _summary_table(self, name: str, day: dt.date, key: str, info: Any) -> pa.Table:
        version = info.mtime_ns or 0
        with self._lock:
            cached = self._summaries.get((name, day))
        if cached and cached[0] == version:
            return cached[1]
        table = pq.read_table(key, filesystem=self._fs).select(summaries.SCHEMAS[name].names)
        table = table.cast(summaries.SCHEMAS[name])
        with self._lock:
            self._summaries[(name, day)] = (version, table)
        return table


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
