"""stock_ticks' observation carries the producer's backlog from its heartbeat."""

from __future__ import annotations

from finpipe_dagster.lake.sensors import producer_backlog_metadata


def test_the_producer_backlog_fields_become_metadata() -> None:
    beat = {
        "backlog_records": 12,
        "oldest_undelivered_age_s": 4.5,
        "log_bytes": 2048,
        "log_capacity_bytes": 16_000_000_000,
        "log_state": "ok",
        "kafka_state": "connected",
        "delivered": 99,
    }
    metadata = producer_backlog_metadata(beat)
    assert metadata["producer_backlog_records"].value == 12
    assert metadata["producer_oldest_undelivered_age_s"].value == 4.5
    assert metadata["producer_log_bytes"].value == 2048
    assert metadata["producer_kafka_state"].value == "connected"
    assert "producer_delivered" not in metadata
    assert producer_backlog_metadata(None) == {}
    assert "producer_oldest_undelivered_age_s" not in producer_backlog_metadata(
        beat | {"oldest_undelivered_age_s": None}
    )
