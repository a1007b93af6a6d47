"""Writes trade records and dead letters to Kafka and keeps the books by delivery report.

Following confluent-kafka's own examples: ``produce`` only queues, ``poll`` serves the
delivery reports, ``flush`` on shutdown; a message counts as written only when its
delivery report says so.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from finpipe.contracts import DeadLetter
from finpipe.settings import Settings
from producer.counters import Counters
from producer.errors import FatalError
from producer.frames import FrameResult, encode_dead_letter

log = structlog.get_logger("producer.kafka")


QUEUE_FULL_WAIT_SECONDS = 0.05


def producer_config(settings: Settings) -> dict[str, Any]:
    """Durable and fast: idempotent, acks=all, lz4, large batches with a short linger."""
    return {
        "bootstrap.servers": settings.kafka_server,
        "client.id": "finpipe-producer",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 25,
        "batch.size": 1_000_000,
        "batch.num.messages": 50_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "delivery.timeout.ms": 300_000,
    }


class KafkaSink:
    def __init__(
        self, settings: Settings, counters: Counters, extra_config: dict[str, Any] | None = None
    ) -> None:
        self.topic = settings.kafka_topic
        self.dlq_topic = settings.kafka_dlq_topic
        self.counters = counters
        self._server = settings.kafka_server
        config = producer_config(settings) | (extra_config or {})
        config["on_delivery"] = self._on_delivery
        config["error_cb"] = self._on_error
        self._producer = Producer(config)

    # --- writing ------------------------------------------------------------------------

    def write(self, result: FrameResult) -> None:
        """Queue a frame's records and dead letters; the counters move as they queue."""
        c = self.counters
        if result.records:
            produce, topic = self._producer.produce, self.topic
            for key, value in result.records:
                c.in_flight += 1  # before produce: a report may arrive in any later poll
                try:
                    produce(topic, value, key)
                except BufferError:
                    self._wait_for_room()
                    produce(topic, value, key)
                c.produced += 1
            if result.last_trade_ts_ms is not None and (
                c.last_trade_ts_ms is None or result.last_trade_ts_ms > c.last_trade_ts_ms
            ):
                c.last_trade_ts_ms = result.last_trade_ts_ms
        for letter in result.dead_letters:
            self.dead_letter(letter)

    def dead_letter(
        self, letter: DeadLetter, *, key: bytes | None = None, may_wait: bool = True
    ) -> None:
        self.counters.in_flight += 1
        value = encode_dead_letter(letter)
        try:
            self._producer.produce(self.dlq_topic, value, key)
        except BufferError:
            if not may_wait:  # inside a delivery report: poll() must not re-enter
                self.counters.in_flight -= 1
                self.counters.delivery_failed += 1
                log.error("local queue full; a refused record could not be dead-lettered")
                return
            self._wait_for_room()
            self._producer.produce(self.dlq_topic, value, key)
        self.counters.dead_letters_produced += 1

    def _wait_for_room(self) -> None:
        # The local queue is full (the broker is slow or away): serve reports until it drains.
        while len(self._producer) >= 1_000_000 * 0.9:
            self._producer.poll(QUEUE_FULL_WAIT_SECONDS)
        self._producer.poll(0)

    def poll(self, timeout: float = 0.0) -> int:
        served = self._producer.poll(timeout)
        if served:
            self.counters.last_delivery_ts_ms = time.time_ns() // 1_000_000
        return served

    def flush(self, timeout: float) -> int:
        """Wait for every queued message's report; returns how many are still unsent."""
        before = len(self._producer)
        remaining = self._producer.flush(timeout)
        if remaining < before:
            self.counters.last_delivery_ts_ms = time.time_ns() // 1_000_000
        return remaining

    def check_reachable(self, settings: Settings, timeout: float = 15.0) -> None:
        """Fail fast with a fix when the broker is away; create missing topics."""
        try:
            metadata = self._producer.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise FatalError(
                f"Kafka at KAFKA_SERVER={self._server} is not reachable ({exc.args[0]}); "
                "start it with `make up` or fix KAFKA_SERVER"
            ) from None
        missing = [t for t in (self.topic, self.dlq_topic) if t not in metadata.topics]
        if missing:
            from infra.services import ensure_topics

            log.info("creating missing topics", topics=missing)
            ensure_topics(settings, missing)

    # --- delivery reports -------------------------------------------------------------

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        c = self.counters
        c.in_flight -= 1
        if err is None:
            if msg.topic() == self.topic:
                c.delivered += 1
            else:
                c.dead_lettered += 1
            return
        c.kafka_errors += 1
        c.last_error = f"delivery to {msg.topic()} failed: {err.str()}"
        if msg.topic() == self.topic:
            # Not written, so not lost: it goes to the dead-letter topic with the reason.
            c.redirected_to_dlq += 1
            log.error("trade record not delivered; dead-lettering it", error=err.str())
            raw = (msg.value() or b"").decode("utf-8", "replace")
            self.dead_letter(
                DeadLetter(
                    raw=raw,
                    reason=f"kafka delivery failed: {err.str()}",
                    received_ts_ms=time.time_ns() // 1_000_000,
                    source=self._source,
                ),
                key=msg.key(),
                may_wait=False,
            )
        else:
            c.delivery_failed += 1
            log.error("dead letter not delivered: this item is lost", error=err.str())

    def _on_error(self, err: KafkaError) -> None:
        self.counters.kafka_errors += 1
        self.counters.last_error = f"kafka: {err.str()}"
        log.warning("kafka client error", error=err.str(), fatal=err.fatal())

    @property
    def _source(self) -> Any:
        return self.counters.source or "simulator"

    def __len__(self) -> int:
        return len(self._producer)
