"""A whole-platform crash, as the crash drill inflicts it: every process the platform
started frozen and killed in the same instant, a torn record left at the end of the
receive log, and the frames the feed sent that the log never got counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterable
from pathlib import Path

from finpipe.settings import Settings
from infra import stack as infra_stack
from producer.journal import HEADER, list_segments, read_segment_records
from producer.simulator import replay


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[3])


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def platform_pids(settings: Settings) -> dict[int, str]:
    """Every live process the platform started, with what found it: each component's
    process (Kafka, MinIO, the feed, Dagster's webserver and daemon, the dashboard, ...),
    everything in their sessions and below them (code servers, run workers, the streams'
    processes and their JVMs), and any process carrying this platform's topic in its
    environment (a run worker whose parent already died)."""
    roots = {
        pid: component.name
        for component in infra_stack.components(settings)
        if component.process is not None and (pid := component.process.pid()) is not None
    }
    table = {
        int(p.name): s
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and (s := _stat(int(p.name)))
    }
    found = dict(roots)
    topic = f"KAFKA_TOPIC={settings.kafka_topic}".encode()
    changed = True
    while changed:  # descendants, to any depth
        changed = False
        for pid, (parent, session) in table.items():
            if pid in found:
                continue
            if parent in found or session in roots:
                found[pid] = f"{found.get(parent) or roots[session]} (child)"
                changed = True
    for pid in table:
        if pid not in found and _environ_has(pid, topic):
            found[pid] = "carries the platform's topic"
    me = os.getpid()
    for pid in list(found):  # never this test's own process or its parents
        if pid == me or pid in _ancestors(me, table):
            del found[pid]
    return found


def _ancestors(pid: int, table: dict[int, tuple[int, int]]) -> set[int]:
    seen: set[int] = set()
    while pid in table and pid not in seen:
        seen.add(pid)
        pid = table[pid][0]
    return seen


def kill_in_one_instant(pids: Iterable[int]) -> int:
    """SIGSTOP every process, then SIGKILL every one: none of them runs a single instruction
    after the first is stopped, so the crash is one instant for all of them, as a power
    cut would be for the processes (the page cache survives it: see the drill's note)."""
    pids = list(pids)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    return len(pids)


def tear_the_log_tail(log_dir: Path) -> int:
    """Append the first part of a record to the newest segment, as a crash in the middle
    of a write leaves it (a header announcing 1,000 bytes, 100 of them written); returns
    the bytes appended."""
    newest = list_segments(log_dir)[-1].path
    torn = HEADER.pack(1_000, 0, 0, 0) + b"x" * 100
    with newest.open("ab") as handle:
        handle.write(torn)
        handle.flush()
        os.fsync(handle.fileno())
    return len(torn)


def logged_frames(log_dir: Path, after_seq: int) -> list[tuple[int, int, str]]:
    """(seq, receive time ms, frame text) of every record after ``after_seq``."""
    return [
        (r.seq, r.recv_ts_ms, r.payload.decode("utf-8", errors="surrogateescape"))
        for segment in list_segments(log_dir)
        for r in read_segment_records(segment.path)
        if r.seq > after_seq
    ]


def last_seq(log_dir: Path) -> int:
    found = [
        r.seq for segment in list_segments(log_dir) for r in read_segment_records(segment.path)
    ]
    return max(found, default=-1)


def frames_due(corpus_lines: list[str], seconds: float) -> int:
    """How many frames of a replay at speed 1 are due ``seconds`` after its first frame."""
    return sum(1 for due, _ in replay.paced(corpus_lines, 1.0) if due <= seconds)


def logged_trades(frames: Iterable[str]) -> list[tuple[str, float, int, float]]:
    """The trades of the logged trade frames, as ``replay_corpus.Trade`` tuples."""
    out = []
    for text in frames:
        try:
            frame = json.loads(text)
        except ValueError:
            continue
        if (
            isinstance(frame, dict)
            and frame.get("type") == "trade"
            and isinstance(frame.get("data"), list)
        ):
            out += [(t["s"], t["p"], t["t"], t["v"]) for t in frame["data"]]
    return out
