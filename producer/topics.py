"""The admin step that creates the trades and dead-letter topics (confluent AdminClient).

Run by ``finpipe-infra up``, the test set-up and the producer's delivery loop before it
sends anything, never as a side effect of building a Kafka producer.

Replication is safe by default: with ``KAFKA_REPLICATION_FACTOR`` and
``KAFKA_MIN_INSYNC_REPLICAS`` unset, a cluster of three or more brokers gets 3 replicas
and ``min.insync.replicas`` 2, so a write the producer saw acknowledged (``acks=all``)
survives the loss of any one broker; a smaller cluster gets what fits, and the log says
so. Topics that exist already are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from finpipe.settings import Settings

log = structlog.get_logger("producer.topics")

SAFE_REPLICAS = 3
"""Replicas a topic gets by default where the cluster has the brokers for them."""


def min_insync_for(replicas: int) -> int:
    """2 of 3 (or more) replicas: one broker may die without refusing writes or losing an
    acknowledged one; with fewer replicas, waiting for all of them would stop writes at
    the first broker down."""
    return max(1, min(2, replicas - 1))


@dataclass(frozen=True)
class ReplicationPlan:
    """How finpipe creates a topic: its replicas (-1: the cluster's default) and its
    ``min.insync.replicas`` (None: the cluster's), and why, for the log."""

    replication_factor: int
    min_insync_replicas: int | None
    reason: str

    @property
    def topic_config(self) -> dict[str, str]:
        if self.min_insync_replicas is None:
            return {}
        return {"min.insync.replicas": str(self.min_insync_replicas)}


def replication_plan(settings: Settings, brokers: int) -> ReplicationPlan:
    """The replication of new topics on a cluster of ``brokers`` live brokers."""
    replicas = settings.kafka_replication_factor
    in_sync = settings.kafka_min_insync_replicas
    if replicas is None:
        replicas = max(1, min(SAFE_REPLICAS, brokers))
        if replicas < SAFE_REPLICAS:
            why = (
                f"{replicas} replica(s): the cluster has {brokers} broker(s) up; 3 brokers "
                "give 3 replicas and min.insync.replicas 2 (or set KAFKA_REPLICATION_FACTOR)"
            )
        else:
            why = f"{replicas} replicas on {brokers} brokers (KAFKA_REPLICATION_FACTOR unset)"
    elif replicas == -1:
        why = "the cluster's default.replication.factor (KAFKA_REPLICATION_FACTOR=-1)"
    else:
        why = f"{replicas} replica(s) (KAFKA_REPLICATION_FACTOR)"
    if in_sync is None and replicas != -1:
        in_sync = min_insync_for(replicas)
        why += f"; min.insync.replicas {in_sync}"
    elif in_sync is None:
        why += "; the cluster's min.insync.replicas"
    else:
        why += f"; min.insync.replicas {in_sync} (KAFKA_MIN_INSYNC_REPLICAS)"
    return ReplicationPlan(replicas, in_sync, why)


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
    cluster = admin.list_topics(timeout=timeout)
    missing = [t for t in wanted if t not in cluster.topics]
    if not missing:
        return []
    plan = replication_plan(settings, len(cluster.brokers))
    log.info(
        "creating Kafka topics",
        topics=missing,
        partitions=settings.kafka_partitions,
        replication=plan.reason,
    )
    futures = admin.create_topics(
        [
            NewTopic(
                t, settings.kafka_partitions, plan.replication_factor, config=plan.topic_config
            )
            for t in missing
        ],
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
                f"{exc.args[0] if exc.args else exc}; check KAFKA_PARTITIONS, "
                "KAFKA_REPLICATION_FACTOR and KAFKA_MIN_INSYNC_REPLICAS against the cluster"
            ) from None
    return missing
