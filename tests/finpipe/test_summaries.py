"""The summary tables as Delta tables on the real MinIO: a day replaced in one commit,
the other days untouched, a reader during an overwrite seeing the old day or the new one,
and the layout before Delta named instead of read."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from finpipe import summaries
from finpipe.lake import s3_filesystem
from finpipe.settings import Settings

NAME = summaries.LATEST_PRICES
DAYS = [dt.date(2026, 3, 2) + dt.timedelta(days=i) for i in range(3)]
SOURCE = summaries.LakeState("s3://warehouse/processed_trades", lake_version=41, lake_rows=7)


def latest(day: dt.date, symbols: int, price: float) -> pa.Table:
    """A day of ``latest_prices``: ``symbols`` rows priced from ``price`` up."""
    at = dt.datetime.combine(day, dt.time(15, 59, 59, 123456), dt.UTC)
    return pa.Table.from_pylist(
        [
            {
                "trade_date": day,
                "symbol": f"S{i:02d}",
                "price": price + i,
                "volume": 1.0 + i,
                "trade_ts": at,
                "computed_ts": at + dt.timedelta(seconds=1),
            }
            for i in range(symbols)
        ],
        schema=summaries.SCHEMAS[NAME],
    )


def rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


@pytest.fixture
def isolated(infrastructure: Settings) -> Iterator[Settings]:
    root = f"test-summaries-{uuid.uuid4().hex[:8]}"
    yield infrastructure.model_copy(update={"summaries_prefix": f"{root}/summaries"})
    s3_filesystem(infrastructure).delete_dir_contents(
        f"{infrastructure.s3_bucket}/{root}", missing_dir_ok=True
    )


def test_overwriting_a_day_leaves_the_other_days_untouched(isolated: Settings) -> None:
    for i, day in enumerate(DAYS):
        summaries.publish(isolated, NAME, day, latest(day, 3 + i, 100.0 * (i + 1)), source=SOURCE)
    before = summaries.open_table(isolated, NAME)
    assert before is not None
    files_before = summaries.files_by_day(before)

    middle = DAYS[1]
    published = summaries.publish(isolated, NAME, middle, latest(middle, 6, 7.0), source=SOURCE)

    after = summaries.open_table(isolated, NAME)
    assert after is not None
    assert published.version == after.version() == before.version() + 1  # one commit
    files_after = summaries.files_by_day(after)
    for day in (DAYS[0], DAYS[2]):  # the same files, so the same rows, of the other days
        assert files_after[day] == files_before[day]
        assert rows(summaries.read(isolated, NAME, [day])) == rows(
            summaries.day_rows(before, NAME, [day])
        )
    assert files_after[middle].isdisjoint(files_before[middle])
    assert rows(summaries.read(isolated, NAME, [middle])) == rows(latest(middle, 6, 7.0))
    assert summaries.published_days(after) == DAYS
    everything = summaries.read(isolated, NAME)
    assert everything["trade_date"].to_pylist() == [DAYS[0]] * 3 + [middle] * 6 + [DAYS[2]] * 5
    # Microseconds, UTC: what Delta stores, to the digit.
    assert everything.schema.field("trade_ts").type == pa.timestamp("us", tz="UTC")
    assert everything["trade_ts"][0].as_py().microsecond == 123456

    [commit] = after.history(limit=1)  # it names what the day was built from
    assert commit[summaries.TRADE_DATE_KEY] == middle.isoformat()
    assert commit[summaries.LAKE_KEY] == SOURCE.lake_uri
    assert commit[summaries.LAKE_VERSION_KEY] == "41"
    assert commit[summaries.LAKE_ROWS_KEY] == "7"


def test_a_reader_during_an_overwrite_sees_the_old_day_or_the_new_one(
    isolated: Settings,
) -> None:
    day, other = DAYS[0], DAYS[1]
    old, new = latest(day, 3, 10.0), latest(day, 5, 20.0)
    summaries.publish(isolated, NAME, other, latest(other, 2, 1.0), source=SOURCE)
    summaries.publish(isolated, NAME, day, old, source=SOURCE)
    held = summaries.open_table(isolated, NAME)  # a reader's snapshot, taken before ...
    assert held is not None
    summaries.publish(isolated, NAME, day, new, source=SOURCE)  # ... the overwrite commits
    # The reader's snapshot still reads the old day, whole: its files were not deleted.
    assert rows(summaries.day_rows(held, NAME, [day])) == rows(old)
    assert rows(summaries.read(isolated, NAME, [day])) == rows(new)
    # Every version since the day was first published holds the old day or the new one,
    # never a mix or none (an overwrite made of a delete and then an append would leave a
    # version without the day), and the other day as it was.
    newest = summaries.open_table(isolated, NAME)
    assert newest is not None
    for version in range(held.version(), newest.version() + 1):
        seen = summaries.read(isolated, NAME, [day, other], version=version)
        got = rows(seen.filter(pc.equal(seen["trade_date"], pa.scalar(day))))
        assert got in (rows(old), rows(new)), version
        assert rows(seen.filter(pc.equal(seen["trade_date"], pa.scalar(other)))) == rows(
            latest(other, 2, 1.0)
        )


def test_readers_while_a_day_is_overwritten_again_and_again(isolated: Settings) -> None:
    """Readers open the newest version while a writer replaces the day over and over:
    every read is one whole version of the day. Between two overwrites the writer waits
    for one read more than there are readers, so at least one read began after the
    previous commit: both versions are read, and reads and commits interleave."""
    day = DAYS[0]
    versions = [latest(day, 3, 10.0), latest(day, 5, 20.0)]
    allowed = [rows(v) for v in versions]
    summaries.publish(isolated, NAME, day, versions[0], source=SOURCE)
    done = threading.Event()
    reads: list[list[dict]] = []
    errors: list[BaseException] = []
    progress = threading.Condition()

    def reader() -> None:
        try:
            while not done.is_set():
                got = rows(summaries.read(isolated, NAME, [day]))
                with progress:
                    reads.append(got)
                    progress.notify_all()
        except BaseException as exc:  # reported by the test below
            errors.append(exc)
            with progress:
                progress.notify_all()

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for i in range(6):
            with progress:
                target = len(reads) + len(threads) + 1
                progress.wait_for(lambda t=target: len(reads) >= t or errors, timeout=60)
            summaries.publish(isolated, NAME, day, versions[(i + 1) % 2], source=SOURCE)
    finally:
        done.set()
        for thread in threads:
            thread.join(60)
    assert errors == []
    assert len(reads) >= 6 * (len(threads) + 1)
    assert all(got in allowed for got in reads)
    assert {str(got) for got in reads} == {str(a) for a in allowed}  # both versions were read


def test_a_missing_table_is_empty_and_the_layout_before_delta_is_named(
    isolated: Settings,
) -> None:
    assert summaries.open_table(isolated, NAME) is None
    empty = summaries.read(isolated, NAME)
    assert empty.num_rows == 0 and empty.schema == summaries.SCHEMAS[NAME]

    old_day = dt.date(2026, 2, 27)
    key = f"{isolated.s3_bucket}/{isolated.summaries_prefix}/{NAME}/trade_date={old_day}"
    with s3_filesystem(isolated).open_output_stream(f"{key}/data.parquet") as out:
        pq.write_table(latest(old_day, 2, 5.0), out)
    assert summaries.pre_delta_days(isolated, NAME) == [old_day]
    with pytest.raises(summaries.PreDeltaLayout) as info:
        summaries.read(isolated, NAME)
    assert "2026-02-27" in str(info.value) and "backfill of summaries_job" in str(info.value)

    # The first publish creates the table beside the old object and says it is there.
    published = summaries.publish(isolated, NAME, DAYS[0], latest(DAYS[0], 1, 1.0), source=SOURCE)
    assert published.pre_delta_days == (old_day,)
    assert summaries.read(isolated, NAME)["trade_date"].to_pylist() == [DAYS[0]]
    again = summaries.publish(isolated, NAME, DAYS[1], latest(DAYS[1], 1, 1.0), source=SOURCE)
    assert again.pre_delta_days == ()


def test_rows_of_another_day_are_refused_before_anything_is_written(isolated: Settings) -> None:
    with pytest.raises(ValueError, match="belong to another day"):
        summaries.publish(isolated, NAME, DAYS[0], latest(DAYS[1], 2, 1.0), source=SOURCE)
    assert summaries.open_table(isolated, NAME) is None
