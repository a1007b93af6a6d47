"""The Spark stream's Prometheus metrics, served by the driver on ``SPARK_METRICS_PORT``.

Counters are read at each scrape from the job's own ``StreamTotals`` (the dict every
heartbeat carries), so ``/metrics`` and the heartbeat tell the same numbers. What the
totals do not keep, the distributions and the per-partition lag, is recorded by
:meth:`SparkMetrics.batch_committed`, called once per committed batch beside
``StreamTotals.record``.

Receive -> committed: the query observes (Spark's ``Dataset.observe``: an aggregate
computed while the batch runs, no second pass over its rows) the oldest producer receive
time of each batch's rows; once the batch is committed, the histogram gets one
observation per batch, the wait of its oldest row: the worst receive -> lake latency of
that batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from finpipe.metrics_endpoint import MetricsEndpoint
from finpipe.settings import Settings
from spark.progress import (
    OLDEST_RECEIVE_KEY,
    RECEIVE_OBSERVATION,
    BatchProgress,
    StreamTotals,
)

PREFIX = "finpipe_spark_"
DURATION_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300)
LATENCY_BUCKETS = (1, 2.5, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 600, 1800, 3600)

COUNTERS = {
    # metric name (without _total): (heartbeat field, help)
    "batches": ("batches", "Micro-batches committed to the lake by this process."),
    "input_rows": ("total_input_rows", "Kafka records read by the committed batches."),
    "rows": ("total_rows", "Rows committed to the lake table."),
    "rejects": ("total_rejects", "Records that were no valid trade, kept as _rejects rows."),
}


def observe_receive_times(trades: DataFrame) -> DataFrame:
    """The prepared rows, unchanged, with the batch's oldest receive time observed."""
    return trades.observe(RECEIVE_OBSERVATION, F.min("ingest_ts_ms").alias(OLDEST_RECEIVE_KEY))


class SparkCollector(Collector):
    def __init__(self, metrics: SparkMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self.metrics.totals.counters(), self.metrics)


def metric_families(counters: dict[str, Any], metrics: SparkMetrics) -> Iterator[Metric]:
    for name, (key, text) in COUNTERS.items():
        yield CounterMetricFamily(PREFIX + name, text, value=int(counters.get(key) or 0))
    behind = GaugeMetricFamily(
        PREFIX + "kafka_offsets_behind",
        "Records in Kafka past the last committed batch when it was planned, per partition.",
        labels=["topic", "partition"],
    )
    for (topic, partition), lag in sorted(metrics.partition_lag.items()):
        behind.add_metric([topic, partition], lag)
    yield behind
    committed = counters.get("committed_ts_ms")
    if committed is not None:
        yield GaugeMetricFamily(
            PREFIX + "last_commit_timestamp_seconds",
            "When the last batch was committed (Unix time).",
            value=committed / 1000,
        )
        yield GaugeMetricFamily(
            PREFIX + "last_batch_id", "Id of the last committed batch.", value=counters["batch_id"]
        )
    progressed = metrics.progress_ts()
    if progressed is not None:
        yield GaugeMetricFamily(
            PREFIX + "last_progress_timestamp_seconds",
            "When the query last planned a trigger, with or without new data (Unix time).",
            value=progressed,
        )


class SparkMetrics:
    """One per job: ``start`` serves, ``batch_committed`` records, ``close`` stops."""

    def __init__(
        self, settings: Settings, totals: StreamTotals, progress_ts: Callable[[], float | None]
    ) -> None:
        self.totals = totals
        self.progress_ts = progress_ts
        self.partition_lag: dict[tuple[str, str], int] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SparkCollector(self))
        self.batch_duration = Histogram(
            PREFIX + "batch_duration_seconds",
            "Duration of each committed micro-batch (trigger execution: plan, read, write).",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.receive_to_commit = Histogram(
            PREFIX + "receive_to_commit_seconds",
            "Per committed batch: from the producer's receive of the batch's oldest row to "
            "the batch's commit to the lake.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.endpoint = MetricsEndpoint(
            self.registry, settings.metrics_host, settings.spark_metrics_port, "SPARK_METRICS_PORT"
        )

    def batch_committed(self, progress: BatchProgress, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.batch_duration.observe(progress.batch_duration_ms / 1000)
        if progress.oldest_receive_ms is not None:
            self.receive_to_commit.observe(max(0.0, now - progress.oldest_receive_ms / 1000))
        self.partition_lag = {
            (topic, partition): lag
            for topic, partitions in progress.partition_lag.items()
            for partition, lag in partitions.items()
        }

    def start(self) -> SparkMetrics:
        self.endpoint.start()
        return self

    def close(self) -> None:
        self.endpoint.close()

    def __enter__(self) -> SparkMetrics:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
