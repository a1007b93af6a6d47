"""The Spark stream's metrics, from its totals and per committed batch (no Spark here)."""

from __future__ import annotations

from prometheus_client import generate_latest

from finpipe.settings import load_settings
from spark.metrics import COUNTERS, SparkMetrics
from spark.progress import BatchProgress, StreamTotals
from spark.sink import BatchWrite
from tests.support.metrics import families, parse, value


def test_a_scrape_reads_the_totals_and_the_last_batch() -> None:
    totals = StreamTotals()
    metrics = SparkMetrics(load_settings(SPARK_METRICS_PORT=0), totals, lambda: 1_700_000_000.0)
    for batch_id, (lag, oldest) in enumerate([(3, 1_000_000), (1, None)]):
        progress = BatchProgress(
            batch_id, 10, 2_500, {"t": {"0": 5, "1": 7}}, {"t": {"0": 5 + lag, "1": 7}}, oldest
        )
        totals.record(progress, BatchWrite(batch_id, 9, 1, 2, None, 0, 5))
        metrics.batch_committed(progress, now=1_060.0)
    text = generate_latest(metrics.registry).decode()
    samples = parse(text)
    beat = totals.counters()
    for name, (key, _) in COUNTERS.items():
        assert value(samples, f"finpipe_spark_{name}_total") == beat[key]
    assert (beat["batches"], beat["total_input_rows"], beat["total_rows"]) == (2, 20, 18)
    assert value(samples, "finpipe_spark_kafka_offsets_behind", topic="t", partition="0") == 1
    assert value(samples, "finpipe_spark_kafka_offsets_behind", topic="t", partition="1") == 0
    assert value(samples, "finpipe_spark_batch_duration_seconds_count") == 2
    assert value(samples, "finpipe_spark_batch_duration_seconds_sum") == 5.0
    # Only the batch with an observed receive time: 1060 s - 1000 s.
    assert value(samples, "finpipe_spark_receive_to_commit_seconds_count") == 1
    assert value(samples, "finpipe_spark_receive_to_commit_seconds_sum") == 60.0
    assert value(samples, "finpipe_spark_last_batch_id") == 1
    assert value(samples, "finpipe_spark_last_progress_timestamp_seconds") == 1_700_000_000.0
    kinds = families(text)
    assert kinds["finpipe_spark_batches"] == "counter"
    assert kinds["finpipe_spark_receive_to_commit_seconds"] == "histogram"


def test_before_any_batch_no_time_is_made_up() -> None:
    metrics = SparkMetrics(load_settings(SPARK_METRICS_PORT=0), StreamTotals(), lambda: None)
    samples = parse(generate_latest(metrics.registry).decode())
    names = {name for name, _ in samples}
    assert "finpipe_spark_batches_total" in names
    assert not names & {
        "finpipe_spark_last_commit_timestamp_seconds",
        "finpipe_spark_last_progress_timestamp_seconds",
    }
