"""The Spark stream's lifetime counters, as its heartbeat reports them."""

from spark.progress import BATCH_BY_DATE_LIMIT, BatchProgress, StreamTotals
from spark.sink import BatchWrite


def _batch(
    batch_id: int, days: tuple[str, ...], rows: int = 10
) -> tuple[BatchProgress, BatchWrite]:
    progress = BatchProgress(batch_id, rows, 1_000, {"t": {"0": batch_id}}, {"t": {"0": batch_id}})
    written = BatchWrite(batch_id, rows, 0, len(days), None, 0, 5, trade_dates=days)
    return progress, written


def test_the_last_batch_of_each_lake_day_is_remembered() -> None:
    totals = StreamTotals()
    totals.record(*_batch(3, ("2026-11-24", "2026-11-25")))
    beat = totals.record(*_batch(4, ("2026-11-25",)))
    assert beat["last_batch_by_trade_date"] == {"2026-11-24": 3, "2026-11-25": 4}
    assert (beat["batches"], beat["total_rows"], beat["batch_id"]) == (2, 20, 4)
    # A late batch into an old day moves that day's mark.
    beat = totals.record(*_batch(9, ("2026-11-24",)))
    assert beat["last_batch_by_trade_date"] == {"2026-11-24": 9, "2026-11-25": 4}


def test_the_map_keeps_only_the_most_recently_written_days() -> None:
    totals = StreamTotals()
    for batch_id in range(BATCH_BY_DATE_LIMIT + 5):
        totals.record(*_batch(batch_id, (f"day-{batch_id:03d}",)))
    kept = totals.counters()["last_batch_by_trade_date"]
    assert len(kept) == BATCH_BY_DATE_LIMIT
    assert min(kept.values()) == 5 and max(kept.values()) == BATCH_BY_DATE_LIMIT + 4
