"""The daily partitioning shared by the summaries and the compaction."""

import datetime as dt

from dagster import DailyPartitionsDefinition

from finpipe.settings import Settings


def daily_partitions(settings: Settings) -> DailyPartitionsDefinition:
    """Daily UTC partitions from SUMMARIES_START_DATE up to and including today
    (``end_offset=1``), so today's partition exists and can be refreshed while it is open.

    Built when the code location loads, from the same settings resource the sensors use.
    """
    return DailyPartitionsDefinition(
        start_date=settings.summaries_start_date, timezone="UTC", end_offset=1
    )


def first_day(settings: Settings) -> str:
    """The first partition key (``YYYY-MM-DD``)."""
    return daily_partitions(settings).start.date().isoformat()


def partition_days(keys: list[str]) -> list[dt.date]:
    return sorted(dt.date.fromisoformat(k) for k in keys)


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
