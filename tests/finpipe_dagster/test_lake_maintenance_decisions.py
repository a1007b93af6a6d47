"""The pure decisions of lake maintenance: which replaced objects may go, what a closed day
needs (summaries, compaction), and which errors mean an object vanished under a reader."""

import datetime as dt

import obstore.exceptions
import pytest

from finpipe import contracts, lake
from finpipe_dagster.lake.compaction import expired_leftovers
from finpipe_dagster.summaries.late_data import (
    RETRY_BACKOFF,
    DayWork,
    LakeDay,
    decide,
    lake_day,
    run_request,
    summaries_behind,
)

NOW = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
GRACE = dt.timedelta(hours=1)
B, C = contracts.batch_file_name, contracts.compacted_file_name


def ago(minutes: float) -> dt.datetime:
    return NOW - dt.timedelta(minutes=minutes)


def test_replaced_objects_stay_for_the_grace_period_after_the_file_that_hid_them() -> None:
    objects = {
        B(1): ago(600),
        B(2): ago(600),
        C(2): ago(90),  # hid batches 1-2 ninety minutes ago
        B(3): ago(80),
        C(3): ago(30),  # hid batch 3 and compacted-upto-2 thirty minutes ago
        B(4): ago(1),  # a late batch: visible, never a leftover
    }
    assert expired_leftovers(objects, NOW, GRACE) == [B(1), B(2)]
    assert expired_leftovers(objects, NOW + dt.timedelta(minutes=31), GRACE) == sorted(
        [B(1), B(2), B(3), C(2)]
    )
    assert expired_leftovers(objects, NOW, dt.timedelta(0)) == sorted([B(1), B(2), B(3), C(2)])
    assert expired_leftovers({B(1): ago(600), B(2): ago(1)}, NOW, GRACE) == []  # not compacted


def _file(day: dt.date, symbol: str, name: str, modified: dt.datetime) -> lake.LakeFile:
    path = f"warehouse/processed_trades/{contracts.partition_dir(day.isoformat(), symbol)}/{name}"
    return lake.LakeFile(path, day, symbol, 1, modified)


DAY = dt.date(2026, 3, 8)


def test_a_day_listing_gives_batch_ids_pending_batches_and_expired_leftovers() -> None:
    files = [
        _file(DAY, "AAPL", B(5), ago(600)),
        _file(DAY, "AAPL", C(5), ago(300)),
        _file(DAY, "AAPL", B(9), ago(10)),  # late, after the compaction
        _file(DAY, "BINANCE:BTCUSDT", B(7), ago(500)),
        _file(DAY, "BINANCE:BTCUSDT", C(7), ago(20)),
    ]
    state = lake_day(DAY, files, NOW, GRACE)
    assert state == LakeDay(DAY, {"AAPL": 9, "BINANCE:BTCUSDT": 7}, ago(10), True, 1)


def test_summaries_are_behind_when_any_folder_holds_a_batch_they_did_not_read() -> None:
    assert summaries_behind({"AAPL": 9}, None)
    assert not summaries_behind({"AAPL": 9, "MSFT": 4}, {"AAPL": 9, "MSFT": 4})
    assert summaries_behind({"AAPL": 9, "MSFT": 5}, {"AAPL": 9, "MSFT": 4})
    # a batch of one symbol that landed after the summaries listed the others
    assert summaries_behind({"AAPL": 9, "MSFT": 9}, {"AAPL": 9})


SETTLE = dt.timedelta(minutes=5)
CLOSED = dt.date(2026, 3, 9)  # yesterday of NOW


def _state(**changes: object) -> LakeDay:
    base = {"day": CLOSED, "batch_ids": {"AAPL": 9}, "pending_since": None}
    return LakeDay(**{**base, "compacted": True, "expired_leftovers": 0, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "summarized", "now", "busy", "failed_at", "expected"),
    [
        # in step: nothing
        (_state(), {"AAPL": 9}, NOW, False, None, None),
        # a late batch after the compaction: summaries at once, compaction once settled
        (_state(batch_ids={"AAPL": 10}, pending_since=ago(1)), {"AAPL": 9}, NOW, False, None,
         DayWork(CLOSED, True, False)),
        (_state(batch_ids={"AAPL": 10}, pending_since=ago(6)), {"AAPL": 10}, NOW, False, None,
         DayWork(CLOSED, False, True)),
        (_state(batch_ids={"AAPL": 10}, pending_since=ago(6)), {"AAPL": 9}, NOW, False, None,
         DayWork(CLOSED, True, True)),
        # leftovers past their grace period: a compaction run deletes them
        (_state(expired_leftovers=3), {"AAPL": 9}, NOW, False, None, DayWork(CLOSED, False, True)),
        # never summarized (a replayed past day)
        (_state(), None, NOW, False, None, DayWork(CLOSED, True, False)),
        # a day not yet compacted is the close schedule's (00:20) while its run may come...
        (_state(compacted=False, pending_since=dt.datetime(2026, 3, 9, 23, 59, tzinfo=dt.UTC)),
         {"AAPL": 9}, dt.datetime(2026, 3, 10, 0, 24, tzinfo=dt.UTC), False, None, None),
        # ...and the sensor's once that passed (the close run failed, or never ran)
        (_state(compacted=False, pending_since=ago(600)), {"AAPL": 9}, NOW, False, None,
         DayWork(CLOSED, False, True)),
        # a run of the day is queued or running: never a second one
        (_state(batch_ids={"AAPL": 10}), {"AAPL": 9}, NOW, True, None, None),
        # the day's last run failed: again, but only after the backoff
        (_state(batch_ids={"AAPL": 10}), {"AAPL": 9}, NOW, False, NOW - RETRY_BACKOFF / 2, None),
        (_state(batch_ids={"AAPL": 10}), {"AAPL": 9}, NOW, False, NOW - RETRY_BACKOFF,
         DayWork(CLOSED, True, False)),
    ],
)  # fmt: skip
def test_what_a_closed_day_needs(
    state: LakeDay,
    summarized: dict[str, int] | None,
    now: dt.datetime,
    busy: bool,
    failed_at: dt.datetime | None,
    expected: DayWork | None,
) -> None:
    found = decide(state, summarized, now=now, settle=SETTLE, busy=busy, failed_at=failed_at)
    assert found == expected


def test_run_requests_order_summaries_before_compaction_and_carry_retries() -> None:
    both = run_request(DayWork(CLOSED, True, True))
    assert (both.job_name, both.partition_key, both.asset_selection) == (
        "close_day_job",
        "2026-03-09",
        None,
    )
    compaction = run_request(DayWork(CLOSED, False, True))
    assert [k.to_user_string() for k in compaction.asset_selection or []] == ["compacted_trades"]
    late = run_request(DayWork(CLOSED, True, False))
    assert late.job_name == "summaries_job"
    assert late.tags["dagster/max_retries"] == "3"


class _ClientError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}}


def test_which_errors_mean_an_object_vanished() -> None:
    assert lake.object_vanished(FileNotFoundError("gone"))
    assert lake.object_vanished(_ClientError("NoSuchKey"))
    assert lake.object_vanished(OSError("When reading information for key 'x': NoSuchKey"))
    assert lake.object_vanished(obstore.exceptions.NotFoundError("Object at location x not found"))
    wrapped = RuntimeError("scan failed")
    wrapped.__cause__ = FileNotFoundError("Path does not exist 'warehouse/x.parquet'")
    assert lake.object_vanished(wrapped)
    assert not lake.object_vanished(_ClientError("AccessDenied"))
    assert not lake.object_vanished(ConnectionError("connection refused"))


def test_a_read_is_retried_once_when_an_object_vanished_and_never_otherwise() -> None:
    calls: list[int] = []

    def vanishing_once() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise FileNotFoundError("Path does not exist")
        return "read"

    assert lake.read_relisting(vanishing_once) == "read" and len(calls) == 2

    def always_vanishing() -> str:
        calls.append(1)
        raise FileNotFoundError("Path does not exist")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        lake.read_relisting(always_vanishing)
    assert len(calls) == 2

    def refused() -> str:
        calls.append(1)
        raise PermissionError("AccessDenied")

    calls.clear()
    with pytest.raises(PermissionError):
        lake.read_relisting(refused)
    assert len(calls) == 1


def test_rolling_segments_do_not_make_a_day_closed() -> None:
    """A closed day that holds only the rolling compaction's segments is the close
    schedule's until its run had its chance, like a day of batch files."""
    now = dt.datetime(2026, 3, 5, 0, 10, tzinfo=dt.UTC)
    day = dt.date(2026, 3, 4)
    old = now - dt.timedelta(hours=1)
    names = [contracts.compacted_segment_name(10, 20), B(21)]
    files = [
        lake.LakeFile(f"warehouse/p/trade_date={day}/symbol=X/{n}", day, "X", 1, old) for n in names
    ]
    state = lake_day(day, files, now, dt.timedelta(hours=1))
    assert not state.compacted
    assert state.batch_ids == {"X": 21}
