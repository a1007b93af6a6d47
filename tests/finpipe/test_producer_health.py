"""The producer's backlog and receive-log health, decided on plain heartbeat values."""

from __future__ import annotations

from finpipe.health import producer_incidents, producer_log_state

HEALTHY = {
    "backlog_records": 3,
    "oldest_undelivered_age_s": 0.2,
    "log_bytes": 1_000_000,
    "log_capacity_bytes": 16_000_000_000,
    "log_near_capacity": False,
    "reading_paused": None,
    "kafka_state": "connected",
}


def test_a_healthy_producer_raises_nothing() -> None:
    assert producer_log_state(HEALTHY) == "ok"
    assert producer_incidents(HEALTHY, 300) == []
    assert producer_incidents(None, 300) == []


def test_an_old_undelivered_trade_is_an_incident_naming_the_setting() -> None:
    beat = HEALTHY | {"oldest_undelivered_age_s": 301.0, "kafka_state": "unreachable: down"}
    [(key, text)] = producer_incidents(beat, 300)
    assert key == "producer_backlog"
    assert "PRODUCER_BACKLOG_ALERT_SECONDS=300" in text and "unreachable" in text


def test_a_log_near_capacity_or_paused_is_an_incident() -> None:
    near = HEALTHY | {"log_near_capacity": True}
    assert producer_log_state(near) == "near capacity"
    assert [k for k, _ in producer_incidents(near, 300)] == ["producer_log"]
    paused = near | {"reading_paused": "the producer log is full"}
    assert producer_log_state(paused).startswith("reading paused: the producer log is full")
    [(_, text)] = producer_incidents(paused, 300)
    assert "PRODUCER_LOG_MAX_MB" in text
