"""Delivery reports are the truth: a trade record Kafka refuses is not lost, it is
dead-lettered with the broker's reason, and the books still balance."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic
from producer.kafka_sink import KafkaSink, producer_config

from finpipe.settings import Settings
from producer.counters import Counters
from producer.frames import FrameProcessor


def test_the_producer_is_durable_and_batched(settings: Settings) -> None:
    config = producer_config(settings)
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["compression.type"] in ("lz4", "zstd") and config["linger.ms"] > 0


def test_a_refused_trade_record_goes_to_the_dead_letter_topic(
    topics_settings: Settings,
    topic_reader: Callable[..., list[tuple[str | None, dict[str, Any]]]],
) -> None:
    # A trades topic whose broker-side size limit no record batch fits in.
    refusing = f"it-refusing-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": topics_settings.kafka_server})
    new = NewTopic(refusing, 1, 1, config={"max.message.bytes": "100"})
    for future in admin.create_topics([new]).values():
        future.result(30)
    settings = topics_settings.model_copy(update={"kafka_topic": refusing})
    counters = Counters(source="simulator")
    sink = KafkaSink(settings, counters)
    now = int(time.time() * 1000)
    frame = b'{"type":"trade","data":[%s]}' % b",".join(
        b'{"p":%d.5,"s":"AAPL","t":%d,"v":1}' % (i + 1, now) for i in range(3)
    )
    result = FrameProcessor(["AAPL"], "simulator").process(frame)
    counters.received += result.accounted_items
    sink.write(result)
    assert sink.flush(30) == 0
    assert counters.balanced() and counters.in_flight == 0
    assert (counters.delivered, counters.dead_lettered, counters.redirected_to_dlq) == (0, 3, 3)
    letters = topic_reader(settings, settings.kafka_dlq_topic)
    assert len(letters) == 3 and {key for key, _ in letters} == {"AAPL"}
    assert all("Message size too large" in v["reason"] for _, v in letters)
    assert sorted(v["raw"].split('"price":')[1][:3] for _, v in letters) == ["1.5", "2.5", "3.5"]
