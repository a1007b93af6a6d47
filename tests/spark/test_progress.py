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
