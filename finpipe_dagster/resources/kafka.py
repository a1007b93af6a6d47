"""Kafka, as the control plane needs it: offsets of the trades topic."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition
from dagster import ConfigurableResource

from finpipe_dagster.resources.finpipe_settings import FinpipeSettings


@dataclass(frozen=True)
class PartitionOffsets:
    partition: int
    low: int
    high: int  # the end offset: the next offset to be written


class KafkaResource(ConfigurableResource):
    """Reads watermarks and time-indexed offsets; never joins a consumer group."""

    settings: FinpipeSettings
    timeout_seconds: float = 10.0

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.settings.load().kafka_server,
                "group.id": f"finpipe-dagster-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )

    def _partitions(self, consumer: Consumer, topic: str) -> list[int]:
        metadata = consumer.list_topics(topic, timeout=self.timeout_seconds)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise KafkaException(
                f"topic {topic!r} is not available on {self.settings.load().kafka_server}: "
                f"{getattr(described, 'error', 'missing')}; is Kafka up (make status)?"
            )
        return sorted(described.partitions)

    def watermarks(self, topic: str | None = None) -> list[PartitionOffsets]:
        topic = topic or self.settings.load().kafka_topic
        consumer = self._consumer()
        try:
            found = []
            for partition in self._partitions(consumer, topic):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self.timeout_seconds
                )
                found.append(PartitionOffsets(partition, low, high))
            return found
        finally:
            consumer.close()

    def offsets_before(self, timestamp_ms: int, topic: str | None = None) -> dict[int, int]:
        """Per partition, the first offset whose record time is >= ``timestamp_ms``.

        Everything below it was written before that time; a partition with no such record
        maps to its end offset.
        """
        topic = topic or self.settings.load().kafka_topic
        consumer = self._consumer()
        try:
            partitions = self._partitions(consumer, topic)
            asked = [TopicPartition(topic, p, timestamp_ms) for p in partitions]
            answered = consumer.offsets_for_times(asked, timeout=self.timeout_seconds)
            result = {}
            for tp in answered:
                if tp.offset < 0:
                    _, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, tp.partition), timeout=self.timeout_seconds
                    )
                    result[tp.partition] = high
                else:
                    result[tp.partition] = tp.offset
            return result
        finally:
            consumer.close()
