"""The infrastructure is real: Kafka and MinIO answer here."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer

from finpipe.settings import Settings
from infra import services


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _consume(settings: Settings, topic: str, expected: int) -> list[tuple[str, str]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_server,
            "group.id": _unique("test"),
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    seen: list[tuple[str, str]] = []
    try:
        for _ in range(60):
            for message in consumer.consume(num_messages=100, timeout=1.0):
                assert message.error() is None, message.error()
                seen.append((message.key().decode(), message.value().decode()))
            if len(seen) >= expected:
                break
    finally:
        consumer.close()
    return seen


def test_topics_exist_with_partitions(infrastructure: Settings) -> None:
    from confluent_kafka.admin import AdminClient

    topics = (
        AdminClient({"bootstrap.servers": infrastructure.kafka_server})
        .list_topics(timeout=10)
        .topics
    )
    for name in (infrastructure.kafka_topic, infrastructure.kafka_dlq_topic):
        assert name in topics
        assert len(topics[name].partitions) == infrastructure.kafka_partitions
    services.ensure_topics(infrastructure)  # idempotent: a second call is harmless


def test_kafka_produce_and_consume(infrastructure: Settings) -> None:
    topic = _unique("it-kafka")
    services.ensure_topics(infrastructure, [topic])
    producer = Producer({"bootstrap.servers": infrastructure.kafka_server, "acks": "all"})
    sent = [(f"SYM{i % 3}", f'{{"n": {i}}}') for i in range(50)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0
    received = _consume(infrastructure, topic, len(sent))
    assert sorted(received) == sorted(sent)


def test_minio_put_list_get(infrastructure: Settings) -> None:
    client = services.s3_client(infrastructure)
    prefix = _unique("it-minio")
    for i in range(3):
        client.put_object(Bucket=infrastructure.s3_bucket, Key=f"{prefix}/obj-{i}", Body=b"x" * i)
    listed = client.list_objects_v2(Bucket=infrastructure.s3_bucket, Prefix=prefix)
    assert sorted(o["Key"] for o in listed["Contents"]) == [f"{prefix}/obj-{i}" for i in range(3)]
    body = client.get_object(Bucket=infrastructure.s3_bucket, Key=f"{prefix}/obj-2")["Body"]
    assert body.read() == b"xx"
    services.ensure_bucket(infrastructure)  # idempotent
