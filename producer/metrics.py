"""The producer's Prometheus metrics, served on ``PRODUCER_METRICS_PORT``.

Nothing is counted twice: a scrape reads the producer's own health snapshot (its
``Counters``, the receive log's usage and the delivery status, the very dict the
heartbeat writes), so ``/metrics`` and the heartbeat always tell the same numbers. The one
thing the counters do not hold, the distribution of receive -> Kafka acknowledgement, is
observed by the delivery loop per log record as it leaves the window of unconfirmed
records (in log order).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from finpipe.metrics_endpoint import MetricsEndpoint
from producer.app import TradeProducer
from producer.delivery import BROKERS_DOWN

PREFIX = "finpipe_producer_"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)

COUNTERS = {
    # metric name (without _total): (health field, help)
    "frames_received": ("frames", "Frames received from the feed and appended to the receive log."),
    "trades_received": ("trades_received", "Trades received in trade frames."),
    "items_received": (
        "received",
        "Items received: trades plus frames that could not be read (books: received = "
        "delivered + dead-lettered + in flight).",
    ),
    "items_delivered": ("delivered", "Trades Kafka confirmed in the trades topic."),
    "items_dead_lettered": ("dead_lettered", "Items Kafka confirmed in the dead-letter topic."),
    "kafka_refusals": (
        "refused_to_dlq",
        "Trade records the broker refused for good, dead-lettered with its reason.",
    ),
    "delivery_errors": ("delivery_errors", "Failed delivery reports (each resent from the log)."),
    "resent_skipped": ("resent_skipped", "Items found already in Kafka on resend, not sent twice."),
    "delivery_sessions": ("delivery_sessions", "Delivery sessions (a scan of Kafka, then sends)."),
    "kafka_client_replacements": (
        "kafka_client_replacements",
        "Kafka clients replaced because they had forgotten every broker.",
    ),
    "frames_not_logged": ("frames_not_logged", "Frames lost because the log refused them at stop."),
    "reconnects": ("reconnects", "Reconnects to the feed, for any reason."),
    "silent_socket_reconnects": (
        "silent_socket_reconnects",
        "Reconnects because the feed sent nothing for PRODUCER_SILENT_SECONDS.",
    ),
    "errors": ("errors", "Errors the producer noted (connection, log, delivery loop)."),
    "kafka_errors": ("kafka_errors", "Errors reported by the Kafka client."),
}
FRAME_KINDS = {
    "trade": "trade_frames",
    "ping": "pings",
    "error": "error_frames",
    "malformed": "malformed_frames",
}
GAUGES = {
    "items_in_flight": ("in_flight", "Items received, not yet confirmed by Kafka."),
    "backlog_records": ("backlog_records", "Log records not yet confirmed by Kafka."),
    "backlog_bytes": ("log_unacked_bytes", "Bytes of the receive log not yet confirmed by Kafka."),
    "receive_log_bytes": ("log_bytes", "Bytes the receive log holds on disk (confirmed included)."),
    "receive_log_capacity_bytes": ("log_capacity_bytes", "PRODUCER_LOG_MAX_MB, in bytes."),
}
KAFKA_STATES = ("connected", "brokers_down", "unreachable", "resending", "not_connected")


def kafka_state_label(state: str) -> str:
    """One of ``KAFKA_STATES`` for the heartbeat's free-text ``kafka_state`` (which may
    carry an error message: never a label value)."""
    if state == "connected":
        return "connected"
    if state == BROKERS_DOWN:
        return "brokers_down"
    if state.startswith("unreachable"):
        return "unreachable"
    if state.startswith("resending"):
        return "resending"
    return "not_connected"


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


class ProducerCollector(Collector):
    """Reads ``TradeProducer.health()`` at each scrape."""

    def __init__(self, producer: TradeProducer) -> None:
        self.producer = producer

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self.producer.health())


def metric_families(health: dict[str, Any]) -> Iterator[Metric]:
    """The producer's metrics from one health snapshot (the heartbeat's fields)."""
    for name, (key, text) in COUNTERS.items():
        yield CounterMetricFamily(PREFIX + name, text, value=int(health.get(key) or 0))
    frames = CounterMetricFamily(
        PREFIX + "frames_validated", "Frames the delivery loop validated, by kind.", labels=["kind"]
    )
    for kind, key in FRAME_KINDS.items():
        frames.add_metric([kind], int(health.get(key) or 0))
    yield frames
    for name, (key, text) in GAUGES.items():
        yield GaugeMetricFamily(PREFIX + name, text, value=float(health.get(key) or 0))
    yield GaugeMetricFamily(
        PREFIX + "receive_log_used_ratio",
        "Share of the receive log's capacity held by records not yet in Kafka (0..1).",
        value=float(health.get("log_used_fraction") or 0),
    )
    yield GaugeMetricFamily(
        PREFIX + "oldest_undelivered_age_seconds",
        "Age of the oldest received record not yet confirmed by Kafka (0 when none).",
        value=float(health.get("oldest_undelivered_age_s") or 0),
    )
    flags = {
        "feed_connected": (bool(health.get("connected")), "1 while connected to the feed."),
        "reading_paused": (
            bool(health.get("reading_paused")),
            "1 while reading is paused because the receive log refuses frames (full).",
        ),
        "kafka_connected": (
            health.get("kafka_state") == "connected",
            "1 while a delivery session to Kafka runs.",
        ),
    }
    for name, (value, text) in flags.items():
        yield GaugeMetricFamily(PREFIX + name, text, value=int(value))
    state = GaugeMetricFamily(
        PREFIX + "kafka_state", "The delivery loop's Kafka state (1: current).", labels=["state"]
    )
    current = kafka_state_label(str(health.get("kafka_state") or ""))
    for label in KAFKA_STATES:
        state.add_metric([label], int(label == current))
    yield state
    for name, key, text in (
        ("last_frame_timestamp_seconds", "last_frame_ts_ms", "When the last frame arrived."),
        ("last_delivery_timestamp_seconds", "last_delivery_ts_ms", "When Kafka last confirmed."),
    ):
        value = _seconds(health.get(key))
        if value is not None:
            yield GaugeMetricFamily(PREFIX + name, text + " (Unix time)", value=value)


class ProducerMetrics:
    """The registry of one producer and its endpoint; ``close`` stops serving."""

    def __init__(self, producer: TradeProducer) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ProducerCollector(producer))
        self.receive_to_ack = Histogram(
            PREFIX + "receive_to_ack_seconds",
            "From a record's receive to Kafka's last acknowledgement of its items, per log "
            "record (frame), in log order.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        producer.delivery.on_acknowledged = self._observe
        settings = producer.settings
        self.endpoint = MetricsEndpoint(
            self.registry,
            settings.metrics_host,
            settings.producer_metrics_port,
            "PRODUCER_METRICS_PORT",
        )

    def _observe(self, recv_ts_ms: int, now_ms: int) -> None:
        self.receive_to_ack.observe(max(0, now_ms - recv_ts_ms) / 1000)

    def start(self) -> ProducerMetrics:
        self.endpoint.start()
        return self

    def close(self) -> None:
        self.endpoint.close()

    def __enter__(self) -> ProducerMetrics:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
