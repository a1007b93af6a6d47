"""The producer's /metrics: names by Prometheus conventions, values equal to its counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from finpipe.health import StreamReporter, read_health
from finpipe.settings import Settings
from producer.delivery import BROKERS_DOWN
from producer.metrics import (
    COUNTERS,
    FRAME_KINDS,
    GAUGES,
    ProducerMetrics,
    kafka_state_label,
    metric_families,
)
from producer.simulator.server import SimulatorServer
from tests.support.metrics import families, parse, scrape, scrape_text, value
from tests.support.network import free_port, listening_addresses
from tests.support.waiting import wait_for

HEALTH: dict[str, Any] = {
    "frames": 11,
    "trade_frames": 7,
    "pings": 2,
    "error_frames": 1,
    "malformed_frames": 1,
    "trades_received": 30,
    "received": 32,
    "delivered": 25,
    "dead_lettered": 2,
    "in_flight": 5,
    "refused_to_dlq": 0,
    "delivery_errors": 3,
    "resent_skipped": 1,
    "delivery_sessions": 2,
    "kafka_client_replacements": 1,
    "frames_not_logged": 0,
    "reconnects": 4,
    "silent_socket_reconnects": 1,
    "errors": 6,
    "kafka_errors": 3,
    "backlog_records": 2,
    "log_unacked_bytes": 4096,
    "log_bytes": 8192,
    "log_capacity_bytes": 1_000_000,
    "log_used_fraction": 0.004096,
    "oldest_undelivered_age_s": 1.5,
    "connected": True,
    "reading_paused": None,
    "kafka_state": "unreachable: Broker transport failure",
    "last_frame_ts_ms": 1_700_000_000_500,
    "last_delivery_ts_ms": None,
}


class _Fixed(Collector):
    def __init__(self, health: dict[str, Any]) -> None:
        self.health = health

    def collect(self):  # type: ignore[no-untyped-def]
        return metric_families(self.health)


def _exposition(health: dict[str, Any]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(health))
    return generate_latest(registry).decode()


def test_every_counter_and_gauge_reads_its_health_field() -> None:
    samples = parse(_exposition(HEALTH))
    for name, (key, _) in COUNTERS.items():
        assert value(samples, f"finpipe_producer_{name}_total") == HEALTH[key], name
    for kind, key in FRAME_KINDS.items():
        assert value(samples, "finpipe_producer_frames_validated_total", kind=kind) == HEALTH[key]
    for name, (key, _) in GAUGES.items():
        assert value(samples, f"finpipe_producer_{name}") == HEALTH[key], name
    assert value(samples, "finpipe_producer_oldest_undelivered_age_seconds") == 1.5
    assert value(samples, "finpipe_producer_receive_log_used_ratio") == 0.004096
    assert value(samples, "finpipe_producer_feed_connected") == 1
    assert value(samples, "finpipe_producer_reading_paused") == 0
    assert value(samples, "finpipe_producer_kafka_connected") == 0
    assert value(samples, "finpipe_producer_kafka_state", state="unreachable") == 1
    assert value(samples, "finpipe_producer_kafka_state", state="connected") == 0
    assert value(samples, "finpipe_producer_last_frame_timestamp_seconds") == 1_700_000_000.5
    # Not known yet: no sample rather than a made-up 0.
    assert not any(n == "finpipe_producer_last_delivery_timestamp_seconds" for n, _ in samples)


def test_names_follow_prometheus_conventions() -> None:
    for name, kind in families(_exposition(HEALTH)).items():
        assert name.startswith("finpipe_producer_")
        # The text parser strips _total from a counter family's name; units are base units.
        assert not name.endswith(("_ms", "_milliseconds", "_mb", "_total"))
        if kind == "gauge" and name.endswith("_timestamp_seconds"):
            continue
        assert kind in {"counter", "gauge"}


@pytest.mark.parametrize(
    ("state", "label"),
    [
        ("connected", "connected"),
        (BROKERS_DOWN, "brokers_down"),
        ("unreachable: KafkaError{code=_TRANSPORT}", "unreachable"),
        ("resending after a failed delivery", "resending"),
        ("not connected yet", "not_connected"),
    ],
)
def test_kafka_state_never_puts_free_text_in_a_label(state: str, label: str) -> None:
    assert kafka_state_label(state) == label


def test_a_scrape_agrees_with_the_producer_counters(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    run_producer: Callable[..., Any],
) -> None:
    sim = start_simulator(trades_per_second=40, tick_seconds=0.1)
    settings = topics_settings.model_copy(
        update={"simulator_port": sim.port, "producer_metrics_port": free_port()}
    )
    with StreamReporter(settings, "producer") as reporter:
        running = run_producer(settings, reporter=reporter)
        metrics = ProducerMetrics(running.producer).start()
        try:
            url = metrics.endpoint.url
            wait_for("the endpoint", lambda: metrics.endpoint.serving, 10, every=0.1)
            assert listening_addresses(settings.producer_metrics_port) == {"127.0.0.1"}
            wait_for("first deliveries", lambda: running.counters.delivered > 5, 30)
            sim.inject("garbage", symbol="AAPL")
            wait_for("200 deliveries", lambda: running.counters.delivered >= 200, 30)
            wait_for("dead letters", lambda: running.counters.dead_lettered > 0, 30)
            live = scrape(url)
            assert value(live, "finpipe_producer_feed_connected") == 1
            assert running.stop() == 0
            # Stopped: nothing moves, so the scrape and the final heartbeat are one moment.
            text = scrape_text(url)
        finally:
            metrics.close()
    samples = parse(text)
    beat = read_health(settings, "producer")
    assert beat is not None and beat["final"]
    for name, (key, _) in COUNTERS.items():
        assert value(samples, f"finpipe_producer_{name}_total") == beat[key], name
    for kind, key in FRAME_KINDS.items():
        assert value(samples, "finpipe_producer_frames_validated_total", kind=kind) == beat[key]
    for name, (key, _) in GAUGES.items():
        assert value(samples, f"finpipe_producer_{name}") == beat[key], name
    assert beat["delivered"] >= 200 and beat["dead_lettered"] > 0
    # One observation per log record Kafka confirmed: every record of this new log.
    acknowledged = value(samples, "finpipe_producer_receive_to_ack_seconds_count")
    assert acknowledged == beat["acked_seq"] + 1 == beat["frames"]
    assert value(samples, "finpipe_producer_receive_to_ack_seconds_bucket", le="+Inf") == (
        acknowledged
    )
    assert 0 < value(samples, "finpipe_producer_receive_to_ack_seconds_sum") < acknowledged * 60
