"""The daily partitioning shared by the summaries and the compaction."""

import datetime as dt

from dagster import DailyPartitionsDefinition

from finpipe.settings import load_settings

daily_partitions = DailyPartitionsDefinition(
    start_date=load_settings().summaries_start_date, timezone="UTC", end_offset=1
)
"""Daily UTC partitions up to and including today (``end_offset=1``), so today's
partition exists and can be refreshed while it is still open."""


def partition_days(keys: list[str]) -> list[dt.date]:
    return sorted(dt.date.fromisoformat(k) for k in keys)


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
