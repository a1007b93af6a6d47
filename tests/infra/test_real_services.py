"""The infrastructure is real: Kafka, MinIO and Spark talk to each other here."""

from __future__ import annotations

import uuid

import duckdb
import pyarrow.dataset as ds
from confluent_kafka import Consumer, Producer

from finpipe import lake
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


def test_spark_reads_kafka_writes_s3a_duckdb_reads_back(spark, infrastructure: Settings) -> None:  # type: ignore[no-untyped-def]
    topic = _unique("it-spark")
    services.ensure_topics(infrastructure, [topic])
    producer = Producer({"bootstrap.servers": infrastructure.kafka_server, "acks": "all"})
    for i in range(100):
        producer.produce(topic, key="BINANCE:BTCUSDT", value=f"{100 + i}")
    assert producer.flush(30) == 0

    prefix = _unique("it-spark-out")
    frame = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", infrastructure.kafka_server)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
        .selectExpr(
            "CAST(key AS STRING) AS symbol", "CAST(CAST(value AS STRING) AS DOUBLE) AS price"
        )
    )
    frame.write.mode("overwrite").parquet(f"s3a://{infrastructure.s3_bucket}/{prefix}")

    dataset = ds.dataset(
        f"{infrastructure.s3_bucket}/{prefix}",
        format="parquet",
        filesystem=lake.s3_filesystem(infrastructure),
    )
    con = duckdb.connect()
    con.register("written", dataset)
    count, total, symbols = con.execute(
        "SELECT count(*), sum(price), list(DISTINCT symbol) FROM written"
    ).fetchone()
    assert count == 100
    assert total == sum(100 + i for i in range(100))
    assert symbols == ["BINANCE:BTCUSDT"]
