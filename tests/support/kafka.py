"""Kafka as the drills read it back: a topic to its end (each value carries its source
position, ``log_position``), the end offsets, and what a receive log says Kafka must hold."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer, TopicPartition

from finpipe.contracts import parse_log_position
from finpipe.settings import Settings
from producer.frames import FrameProcessor
from producer.journal import list_segments, read_segment_records


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


def kafka_end_offsets(settings: Settings, topic: str | None = None) -> dict[int, int]:
    topic = topic or settings.kafka_topic
    consumer = Consumer({"bootstrap.servers": settings.kafka_server, "group.id": "drill-probe"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
    finally:
        consumer.close()


def expected_items(log_dir: Path, settings: Settings, source: str) -> tuple[set, set]:
    """(every (seq, item) the log's frames yield, the subset that are dead letters)."""
    processor = FrameProcessor(settings.finnhub_tickers, source)  # type: ignore[arg-type]
    items, letters = set(), set()
    for segment in list_segments(log_dir):
        for record in read_segment_records(segment.path):
            result = processor.process(record.payload, now_ms=record.recv_ts_ms)
            trades = len(result.records)
            items.update((record.seq, i) for i in range(trades + len(result.dead_letters)))
            letters.update((record.seq, trades + j) for j in range(len(result.dead_letters)))
    return items, letters


def source_position(value: dict[str, Any]) -> tuple[int, int]:
    """(seq, item) of a record's source position in the receive log."""
    found = parse_log_position(value["log_position"])
    return found.seq, found.item
