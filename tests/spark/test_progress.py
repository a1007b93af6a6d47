"""The Spark stream's lifetime counters, as its heartbeat reports them."""

from spark.progress import BatchProgress, StreamTotals
from spark.sink import BatchWrite


def _batch(batch_id: int, rows: int = 10, rejects: int = 0) -> tuple[BatchProgress, BatchWrite]:
    progress = BatchProgress(batch_id, rows, 1_000, {"t": {"0": batch_id}}, {"t": {"0": batch_id}})
    written = BatchWrite(batch_id, rows, rejects, 2, None, 0, 5)
    return progress, written


def test_the_heartbeat_counts_the_lifetime_and_shows_the_latest_batch() -> None:
    totals = StreamTotals()
    totals.record(*_batch(3))
    beat = totals.record(*_batch(4, rows=7, rejects=2))
    assert (beat["batches"], beat["total_rows"], beat["total_rejects"]) == (2, 17, 2)
    assert (beat["batch_id"], beat["rows"], beat["rejects"]) == (4, 7, 2)
    assert beat["end_offsets"] == {"t": {"0": 4}}
    assert totals.counters() == beat


def test_lag_per_partition_adds_up_to_the_heartbeat_lag() -> None:
    progress = BatchProgress(
        1, 5, 1_000, {"t": {"0": 10, "1": 20}}, {"t": {"0": 15, "1": 20, "2": 4}}
    )
    assert progress.partition_lag == {"t": {"0": 5, "1": 0, "2": 4}}
    assert progress.lag_records == 9


def test_the_observed_oldest_receive_time_comes_with_the_progress() -> None:
    from types import SimpleNamespace

    from pyspark.sql import Row

    from spark.progress import OLDEST_RECEIVE_KEY, RECEIVE_OBSERVATION, batch_progress

    def progress(observed: dict[str, Row]) -> SimpleNamespace:
        source = SimpleNamespace(endOffset='{"t":{"0":3}}', latestOffset='{"t":{"0":3}}')
        return SimpleNamespace(
            batchId=7,
            numInputRows=3,
            durationMs={"triggerExecution": 1200},
            sources=[source],
            observedMetrics=observed,
        )

    seen = batch_progress(progress({RECEIVE_OBSERVATION: Row(**{OLDEST_RECEIVE_KEY: 1234})}))
    assert (seen.batch_id, seen.oldest_receive_ms, seen.lag_records) == (7, 1234, 0)
    only_rejects = Row(**{OLDEST_RECEIVE_KEY: None})
    assert batch_progress(progress({RECEIVE_OBSERVATION: only_rejects})).oldest_receive_ms is None
    assert batch_progress(progress({})).oldest_receive_ms is None


def test_the_totals_count_input_rows_and_the_commit_time() -> None:
    totals = StreamTotals()
    totals.record(*_batch(1, rows=4))
    beat = totals.record(*_batch(2, rows=6))
    assert beat["total_input_rows"] == 10 and beat["committed_ts_ms"] > 0
