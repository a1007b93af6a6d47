"""Reading a Kafka topic back to its end (each value carries its source position,
``log_position``): shared by the producer's drills and the platform's outage drill."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
from confluent_kafka import Consumer, TopicPartition

from finpipe.settings import Settings


def read_topic(settings: Settings, topic: str) -> list[tuple[str | None, dict[str, Any]]]:
    """Every message of a topic, read to the end of each partition (high watermark)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_server,
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assignment = [TopicPartition(topic, p, 0) for p in partitions]
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        pending = {p for p, end in ends.items() if end > 0}
        consumer.assign(assignment)
        out: list[tuple[str | None, dict[str, Any]]] = []
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                assert msg.error() is None, msg.error()
                key = msg.key().decode() if msg.key() is not None else None
                out.append((key, msgspec.json.decode(msg.value())))
                if msg.offset() + 1 >= ends[msg.partition()]:
                    pending.discard(msg.partition())
        assert not pending, f"could not read {topic} to its end"
        return out
    finally:
        consumer.close()
