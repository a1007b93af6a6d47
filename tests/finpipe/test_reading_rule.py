"""The lake's reading rule with compacted segments: every batch is read exactly once.

A model of one partition folder: the writer adds batch files with growing ids (and may
rewrite its newest batch, as a replay does), a compactor folds a contiguous stretch of
the visible objects into one segment (or, closing the day, all of them into
``compacted-upto-<last>``), a cleaner deletes hidden objects, and a compaction may stop
before its PUT. After every step, a reader listing the folder must see each written
batch exactly once.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from finpipe import contracts
from finpipe_dagster.lake.rolling_compaction import rolling_runs, segment_name

B, U, S = contracts.batch_file_name, contracts.compacted_file_name, contracts.compacted_segment_name
NOW = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)


def test_segments_and_batches_outside_them() -> None:
    names = [B(i) for i in range(1, 10)] + [U(3), S(4, 6), S(4, 5), S(7, 7)]
    assert contracts.visible_object_names(names) == sorted([B(8), B(9), S(4, 6), U(3), S(7, 7)])


def test_a_wider_segment_hides_the_ones_it_covers() -> None:
    assert contracts.visible_object_names([S(4, 6), S(7, 9), S(4, 9), B(10)]) == [B(10), S(4, 9)]
    assert contracts.visible_object_names([U(5), U(9), B(7)]) == [U(9)]  # the old form too


def test_partial_overlap_reads_the_newest_and_never_both() -> None:
    assert contracts.visible_object_names([S(1, 10), S(5, 20), B(3), B(21)]) == sorted(
        [S(5, 20), B(3), B(21)]
    )


def test_names_round_trip() -> None:
    assert contracts.parse_lake_object_name(S(4, 9)) == contracts.LakeObjectName(True, 9, 4)
    assert contracts.parse_lake_object_name(U(9)).first == 0
    assert contracts.parse_lake_object_name(B(9)).first == 9
    assert contracts.parse_lake_object_name("compacted-000000000009-000000000004.parquet") is None


class Folder:
    def __init__(self) -> None:
        self.holds: dict[str, frozenset[int]] = {}  # object -> batch ids of its rows
        self.written: set[int] = set()
        self.next_id = 0

    def visible(self) -> list[str]:
        return contracts.visible_object_names(self.holds)

    def check(self) -> None:
        seen: list[int] = [b for name in self.visible() for b in self.holds[name]]
        assert sorted(seen) == sorted(self.written), (sorted(self.holds), self.visible())

    def write(self, gap: int) -> None:
        self.next_id += gap
        self.holds[B(self.next_id)] = frozenset({self.next_id})
        self.written.add(self.next_id)

    def replay_newest(self) -> None:
        if self.written:  # the same batch id, the same rows
            self.holds[B(max(self.written))] = frozenset({max(self.written)})

    def compact(self, start: int, length: int, interrupted: bool) -> None:
        visible = sorted(self.visible(), key=lambda n: contracts.parse_lake_object_name(n).first)
        run = visible[start % max(len(visible), 1) :][: max(length, 1)]
        if not run or interrupted:
            return  # an interrupted compaction never made its PUT
        self.holds[segment_name(run)] = frozenset().union(*(self.holds[n] for n in run))

    def close(self) -> None:
        visible = self.visible()
        if visible:
            last = max(contracts.parse_lake_object_name(n).batch_id for n in visible)
            self.holds[U(last)] = frozenset().union(*(self.holds[n] for n in visible))

    def clean(self, pick: int) -> None:
        hidden = sorted(set(self.holds) - set(self.visible()))
        if hidden:
            del self.holds[hidden[pick % len(hidden)]]


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 3)),
        st.tuples(st.just("replay"), st.just(0)),
        st.tuples(st.just("compact"), st.tuples(st.integers(0, 30), st.integers(1, 8))),
        st.tuples(st.just("interrupt"), st.tuples(st.integers(0, 30), st.integers(1, 8))),
        st.tuples(st.just("close"), st.just(0)),
        st.tuples(st.just("clean"), st.integers(0, 50)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_any_listing_the_writer_and_compactor_reach_shows_each_batch_once(steps) -> None:
    folder = Folder()
    for kind, arg in steps:
        if kind == "write":
            folder.write(arg)
        elif kind == "replay":
            folder.replay_newest()
        elif kind in {"compact", "interrupt"}:
            folder.compact(*arg, interrupted=kind == "interrupt")
        elif kind == "close":
            folder.close()
        else:
            folder.clean(arg)
        folder.check()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 3), min_size=1, max_size=80),
    st.integers(0, 80),
    st.integers(2, 20),
)
def test_rolling_runs_fold_only_old_batches_into_bounded_segments(gaps, young, span) -> None:
    """The policy's runs, applied, keep every batch once; young batches stay files."""
    folder = Folder()
    for gap in gaps:
        folder.write(gap)
    ids = sorted(folder.written)
    young_ids = set(ids[len(ids) - min(young, len(ids)) :])
    for _ in range(3):  # three rolling runs in a row
        modified = {
            n: NOW
            if n.startswith("batch-") and int(n[6:18]) in young_ids
            else NOW - dt.timedelta(1)
            for n in folder.holds
        }
        for run in rolling_runs(
            modified, NOW, min_age=dt.timedelta(minutes=2), segment_batches=span
        ):
            parsed = [contracts.parse_lake_object_name(n) for n in run]
            assert parsed[-1].batch_id - parsed[0].first + 1 <= span or len(run) == 1
            assert not any(not p.compacted and p.batch_id in young_ids for p in parsed)
            folder.holds[segment_name(run)] = frozenset().union(*(folder.holds[n] for n in run))
        folder.check()
    visible_batches = {n for n in folder.visible() if n.startswith("batch-")}
    assert {int(n[6:18]) for n in visible_batches} == young_ids
