"""Header logic: freshness colours and stream status from heartbeats."""

from __future__ import annotations

from finpipe.settings import Settings
from streamlit_app.status import Level, freshness_level, stream_status


def test_freshness_levels_follow_the_windows(settings: Settings) -> None:
    warn, fail = settings.freshness_warn_seconds, settings.freshness_fail_seconds
    assert freshness_level(None, settings) is Level.UNKNOWN
    assert freshness_level(0, settings) is Level.OK
    assert freshness_level(warn, settings) is Level.OK
    assert freshness_level(warn + 1, settings) is Level.WARN
    assert freshness_level(fail, settings) is Level.WARN
    assert freshness_level(fail + 1, settings) is Level.FAIL


def test_stream_status_from_heartbeats(settings: Settings) -> None:
    now = 1_000_000.0
    assert stream_status(None, settings, now).word == "unknown"
    assert stream_status({"heartbeat_ts": now - 3}, settings, now).word == "running"
    assert stream_status({"heartbeat_ts": now - 300}, settings, now).word == "silent"
    stopped = stream_status({"heartbeat_ts": now - 90, "final": True}, settings, now)
    assert (stopped.level, stopped.text) == (Level.FAIL, "final report 90 s ago")
