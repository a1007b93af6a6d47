"""The receive log on plain files: append, group flush, segments, retention, capacity,
a torn tail after a crash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from producer.journal import (
    HEADER,
    SEGMENT_MAGIC,
    Journal,
    JournalCursor,
    JournalError,
    list_segments,
    read_segment_records,
)


def _journal(path: Path, **options: object) -> Journal:
    defaults: dict[str, object] = {
        "max_bytes": 10_000_000,
        "segment_bytes": 1_000_000,
        "flush_window_s": 0.05,
        "retention_s": 3600.0,
    }
    return Journal(path, **(defaults | options))  # type: ignore[arg-type]


def _frame(i: int) -> bytes:
    return b'{"type":"trade","data":[{"p":%d.5,"s":"AAPL","t":1700000000000,"v":1}]}' % i


def _read_all(journal: Journal, after: int = -1) -> list[tuple[int, int, bytes]]:
    cursor = JournalCursor(journal, after)
    out = []
    while batch := cursor.read():
        out.extend((r.seq, r.recv_ts_ms, r.payload) for r in batch)
    return out


def test_appended_frames_are_read_back_in_order_once_flushed(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    seqs = [journal.append(_frame(i), 1_000 + i) for i in range(100)]
    assert seqs == list(range(100))
    assert _read_all(journal) == []  # nothing is durable before the flush
    journal.flush()
    got = _read_all(journal)
    assert [s for s, _, _ in got] == seqs
    assert got[7] == (7, 1_007, _frame(7))
    assert [s for s, _, _ in _read_all(journal, after=89)] == list(range(90, 100))
    journal.close()


def test_the_flusher_makes_appends_durable_within_the_window(tmp_path: Path) -> None:
    journal = _journal(tmp_path, flush_window_s=0.05)
    journal.start_flusher()
    journal.append(b"x", 1)
    assert journal.wait_durable(-1, timeout=2.0)
    assert journal.durable[2] == 0
    journal.close()


def test_segments_roll_and_reopening_continues_the_sequence(tmp_path: Path) -> None:
    journal = _journal(tmp_path, segment_bytes=2_000)
    for i in range(200):
        journal.append(_frame(i), i)
    journal.flush()
    segments = list_segments(tmp_path)
    assert len(segments) > 5
    assert [s for s, _, _ in _read_all(journal)] == list(range(200))
    journal.close()
    again = _journal(tmp_path, segment_bytes=2_000)
    assert again.log_id == journal.log_id
    assert again.append(b"next", 1) == 200
    again.flush()
    assert [s for s, _, _ in _read_all(again, after=195)] == [196, 197, 198, 199, 200]
    first = list(read_segment_records(segments[0].path))
    assert first[0].seq == 0 and first[0].payload == _frame(0)
    again.close()


def test_a_torn_tail_after_a_crash_is_truncated_and_the_sequence_reused(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    for i in range(10):
        journal.append(_frame(i), i)
    journal.flush()
    journal.close()
    newest = list_segments(tmp_path)[-1].path
    good_size = newest.stat().st_size
    with newest.open("ab") as handle:  # a header and half a payload: the process died mid-write
        handle.write(HEADER.pack(500, 0, 10, 10) + b"half")
    reopened = _journal(tmp_path)
    assert reopened.truncated_bytes == HEADER.size + 4
    assert newest.stat().st_size == good_size
    assert reopened.append(b"after the crash", 11) == 10
    reopened.flush()
    assert [s for s, _, _ in _read_all(reopened)] == list(range(11))
    reopened.close()


def test_a_corrupt_record_at_the_tail_is_cut_off_there(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    for i in range(5):
        journal.append(_frame(i), i)
    journal.close()
    newest = list_segments(tmp_path)[-1].path
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0xFF  # a bit flip in the last record's payload: its CRC no longer matches
    newest.write_bytes(bytes(data))
    reopened = _journal(tmp_path)
    assert reopened.last_seq == 3 and reopened.truncated_bytes > 0
    reopened.close()


def test_an_empty_segment_file_left_by_a_crash_is_reused(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.append(b"a", 1)
    journal.close()
    (tmp_path / "seg-00000000000000000001.log").write_bytes(SEGMENT_MAGIC[:3])
    reopened = _journal(tmp_path)
    assert reopened.append(b"b", 2) == 1
    reopened.flush()
    assert [p for _, _, p in _read_all(reopened)] == [b"a", b"b"]
    reopened.close()


def test_segments_go_only_when_acknowledged_and_past_retention(tmp_path: Path) -> None:
    journal = _journal(tmp_path, segment_bytes=1_000, retention_s=60.0)
    for i in range(100):
        journal.append(_frame(i), i)
    journal.flush()
    segments = list_segments(tmp_path)
    now = segments[-1].mtime
    assert journal.release(acked_seq=-1, now=now + 3600) == []  # nothing acknowledged
    second_last = segments[1].last_seq
    assert journal.release(acked_seq=second_last, now=now) == []  # acknowledged but young
    deleted = journal.release(acked_seq=second_last, now=now + 61)
    assert deleted == [segments[0].path.name, segments[1].path.name]
    assert journal.release(acked_seq=99, now=now + 61)  # the rest but the newest
    assert len(list_segments(tmp_path)) == 1
    assert [s for s, _, _ in _read_all(journal, after=99)] == []
    journal.close()


def test_at_capacity_acknowledged_segments_go_early_then_writes_are_refused(
    tmp_path: Path,
) -> None:
    journal = _journal(tmp_path, max_bytes=20_000, segment_bytes=2_000, retention_s=1e9)
    seq = -1
    while True:
        try:
            seq = journal.append(_frame(seq + 1), 0)
        except JournalError as exc:
            message = str(exc)
            break
    assert "PRODUCER_LOG_MAX_MB" in message and "paused" in message
    assert journal.bytes <= 20_000
    journal.flush()
    # Kafka has half of it: those segments go although their retention is far away.
    assert journal.usage()["log_near_capacity"] is True  # all of it waits for Kafka
    journal.release(acked_seq=seq // 2)
    assert journal.append(b"room again", 0) == seq + 1
    usage = journal.usage()
    assert usage["log_unacked_bytes"] < usage["log_bytes"]  # type: ignore[operator]
    journal.release(acked_seq=seq + 1)
    assert journal.usage()["log_near_capacity"] is False  # full, but all of it reclaimable
    journal.close()


def test_a_frame_larger_than_the_log_can_hold_is_refused_naming_the_setting(
    tmp_path: Path,
) -> None:
    journal = _journal(tmp_path, max_bytes=20_000, segment_bytes=2_000)
    with pytest.raises(JournalError, match="larger than half of PRODUCER_LOG_MAX_MB"):
        journal.append(b"x" * 10_001, 0)
    journal.close()


def test_an_unwritable_directory_fails_naming_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalError, match="PRODUCER_LOG_DIR"):
        _journal(blocker / "log")


def test_a_second_writer_on_the_same_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("producer.journal.LOCK_WAIT_SECONDS", 0.3)
    first = _journal(tmp_path)
    with pytest.raises(JournalError, match="another producer"):
        _journal(tmp_path)
    first.close()
    _journal(tmp_path).close()


def test_the_cursor_follows_across_segments_as_they_become_durable(tmp_path: Path) -> None:
    journal = _journal(tmp_path, segment_bytes=500)
    cursor = JournalCursor(journal, -1)
    seen: list[int] = []
    for i in range(60):
        journal.append(_frame(i), i)
        if i % 7 == 0:
            journal.flush()
            for record in cursor.read(max_bytes=300):
                seen.append(record.seq)
    journal.flush()
    while batch := cursor.read():
        seen.extend(r.seq for r in batch)
    assert seen == list(range(60))
    assert os.path.exists(tmp_path / "log-id")
    journal.close()


def test_the_log_replays_and_exports_as_a_recording(tmp_path: Path) -> None:
    from producer.simulator import cli, replay

    log_dir = tmp_path / "log"
    journal = _journal(log_dir, segment_bytes=1_000)
    frames = [_frame(i) for i in range(40)] + [b'{"type":"ping"}', b"}{ garbage"]
    for i, frame in enumerate(frames):
        journal.append(frame, i)
    journal.close()
    expected = [f.decode() for f in frames]
    assert replay.load_frames(log_dir) == expected
    first = list_segments(log_dir)[0].path
    assert replay.load_frames(first) == expected[: len(replay.load_frames(first))]
    out = tmp_path / "day.jsonl"
    assert cli.main(["--replay", str(log_dir), "--export-jsonl", str(out)]) == 0
    assert replay.load_frames(out) == expected


def test_make_up_plays_a_replay_at_finpipe_replay_speed(tmp_path: Path) -> None:
    from finpipe.settings import load_settings
    from infra.stack import simulator_process

    settings = load_settings(FINPIPE_REPLAY_FILE=str(tmp_path / "f.jsonl"), FINPIPE_REPLAY_SPEED=0)
    argv = simulator_process(settings).argv
    assert argv[argv.index("--speed") + 1] == "0"
    assert argv[argv.index("--replay") + 1] == str(tmp_path / "f.jsonl")
