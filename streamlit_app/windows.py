"""The time windows a user can choose for the charts, resolved against "now" (UTC)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from finpipe import contracts


class WindowChoice(StrEnum):
    LAST_15_MIN = "Last 15 min"
    LAST_HOUR = "Last hour"
    TODAY = "Today"
    PAST_DAY = "A past day"


RELATIVE = {
    WindowChoice.LAST_15_MIN: dt.timedelta(minutes=15),
    WindowChoice.LAST_HOUR: dt.timedelta(hours=1),
}


@dataclass(frozen=True)
class Window:
    """Bars with ``start <= minute < end``; ``days`` are the UTC days it touches."""

    label: str
    start: dt.datetime
    end: dt.datetime
    live: bool  # True when the window reaches "now" (the lake tail matters)

    @property
    def days(self) -> list[dt.date]:
        last = (self.end - dt.timedelta(microseconds=1)).date()
        return contracts.trade_dates(self.start.date(), last)


def floor_minute(ts: dt.datetime) -> dt.datetime:
    return ts.replace(second=0, microsecond=0)


def ceil_minute(ts: dt.datetime) -> dt.datetime:
    floored = floor_minute(ts)
    return floored if floored == ts else floored + dt.timedelta(minutes=1)


def day_window(day: dt.date, *, live: bool) -> Window:
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    return Window(day.isoformat(), start, start + dt.timedelta(days=1), live)


def resolve(choice: WindowChoice, now: dt.datetime, past_day: dt.date | None = None) -> Window:
    """The window for a choice; the minute in progress is included in relative windows."""
    if choice in RELATIVE:
        end = floor_minute(now) + dt.timedelta(minutes=1)
        return Window(choice.value, end - RELATIVE[choice], end, live=True)
    if choice is WindowChoice.PAST_DAY and past_day is not None and past_day != now.date():
        return day_window(past_day, live=False)
    return day_window(now.date(), live=True)
