"""Platform state shown in the header: freshness levels and stream status (pure logic)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from finpipe.health import FINAL_KEY, heartbeat_age_seconds
from finpipe.settings import Settings


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    UNKNOWN = "unknown"


LEVEL_BADGE = {
    Level.OK: ("green", "fresh"),
    Level.WARN: ("orange", "late"),
    Level.FAIL: ("red", "stale"),
    Level.UNKNOWN: ("gray", "no data"),
}


def freshness_level(age_seconds: float | None, settings: Settings) -> Level:
    """Green within FRESHNESS_WARN_SECONDS, amber up to FRESHNESS_FAIL_SECONDS, red after."""
    if age_seconds is None:
        return Level.UNKNOWN
    if age_seconds <= settings.freshness_warn_seconds:
        return Level.OK
    if age_seconds <= settings.freshness_fail_seconds:
        return Level.WARN
    return Level.FAIL


@dataclass(frozen=True)
class StreamStatus:
    level: Level
    word: str
    text: str


def stream_status(
    health: dict[str, Any] | None, settings: Settings, now: float | None = None
) -> StreamStatus:
    """Running while heartbeats are recent; a final report means a clean stop."""
    age = heartbeat_age_seconds(health, now)
    if health is None or age is None:
        return StreamStatus(Level.UNKNOWN, "unknown", "never reported")
    if health.get(FINAL_KEY):
        return StreamStatus(Level.FAIL, "stopped", f"final report {_ago(age)}")
    alive_within = max(30.0, 3 * settings.spark_trigger_seconds)
    if age <= alive_within:
        return StreamStatus(Level.OK, "running", f"heartbeat {_ago(age)}")
    return StreamStatus(Level.WARN, "silent", f"last heartbeat {_ago(age)}")


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def age_text(seconds: float | None) -> str:
    return "—" if seconds is None else _ago(seconds).removesuffix(" ago")
