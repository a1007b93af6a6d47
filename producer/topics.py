"""The admin step that creates the trades and dead-letter topics (confluent AdminClient).

Run by ``finpipe-infra up``, the test set-up and the producer's delivery loop before it
sends anything, never as a side effect of building a Kafka producer. The replication
factor is ``KAFKA_REPLICATION_FACTOR``; its default -1 asks the cluster for its own
default (``default.replication.factor``), so a three-broker cluster gets replicated
topics without a finpipe setting.
"""

from __future__ import annotations

import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from finpipe.settings import Settings

log = structlog.get_logger("producer.topics")


class TopicError(RuntimeError):
    """A topic could not be created; the message says why and what to check."""


def ensure_topics(
    settings: Settings, topics: list[str] | None = None, timeout: float = 10.0
) -> list[str]:
    """Create the missing ones of ``topics`` (default: trades and DLQ); returns those created.

    Raises ``KafkaException`` when the broker cannot be reached (a caller may retry) and
    ``TopicError`` when the broker refuses to create a topic.
    """
    admin = AdminClient({"bootstrap.servers": settings.kafka_server})
    wanted = topics or [settings.kafka_topic, settings.kafka_dlq_topic]
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    replication = settings.kafka_replication_factor
    log.info(
        "creating Kafka topics",
        topics=missing,
        partitions=settings.kafka_partitions,
        replication_factor=(
            "the cluster's default.replication.factor (KAFKA_REPLICATION_FACTOR=-1)"
            if replication == -1
            else f"{replication} (KAFKA_REPLICATION_FACTOR)"
        ),
    )
    futures = admin.create_topics(
        [NewTopic(t, settings.kafka_partitions, replication) for t in missing],
        request_timeout=timeout,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout + 20)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                continue
            raise TopicError(
                f"could not create Kafka topic {topic} at KAFKA_SERVER={settings.kafka_server}: "
                f"{exc.args[0] if exc.args else exc}; check KAFKA_PARTITIONS and "
                "KAFKA_REPLICATION_FACTOR against the cluster"
            ) from None
    return missing
