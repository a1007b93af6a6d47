"""The stream processes behind runs: who they are, whether they still live, stopping them.

A run's worker tags the run with its stream process's identity (host, pid and the kernel's
start time of that pid, so a reused pid is not mistaken for it) and, once it saw the
process exit, with the exit code. The supervisor probes only processes whose exit nobody
saw; it can confirm "gone" only on its own host (``/proc``), anything else is "unknown".
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from finpipe_dagster.streams.policy import ProcessState

PROCESS_TAG = "finpipe/process"
"""``host:pid:start`` of the run's stream process, set by the run worker when it starts it."""
EXITED_TAG = "finpipe/exit_code"
"""The stream process's exit code, set by the run worker once it saw the process end."""
LAST_ERROR_TAG = "finpipe/last_error"
"""The failed stream's last error (its final heartbeat or last lines on stderr)."""
PROGRESSED_UNTIL_TAG = "finpipe/progressed_until"
"""A failed stream's last progress (``health.PROGRESS_KEY`` of its final heartbeat), epoch
seconds, or ``never``: how long it was healthy before it failed."""
NEVER_PROGRESSED = "never"

_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (state) on; None when there is no such process."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> str:
    fields = _stat_fields(pid)
    return fields[19] if fields else "?"  # field 22: start time in clock ticks since boot


def identity(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}:{start_ticks(pid)}"


def parse_identity(text: str) -> tuple[str, int, str] | None:
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    host, pid, start = parts
    return host, int(pid), start


def describe(text: str) -> str:
    parsed = parse_identity(text)
    return f"pid {parsed[1]} on host {parsed[0]}" if parsed else f"process {text!r}"


def probe(text: str) -> ProcessState:
    """alive, gone (no such process, a zombie, or the pid now belongs to another process),
    or unknown (another host, or no ``/proc`` to check)."""
    parsed = parse_identity(text)
    if parsed is None or parsed[0] != socket.gethostname() or not _PROC.is_dir():
        return "unknown"
    _, pid, start = parsed
    fields = _stat_fields(pid)
    if fields is None or fields[0] in {"Z", "X", "x"}:
        return "gone"
    if start != "?" and fields[19] != start:
        return "gone"
    return "alive"


def send_signal(text: str, sig: signal.Signals) -> str:
    """Signal the process if it is still the one named; returns what happened."""
    if probe(text) != "alive":
        return "gone"
    parsed = parse_identity(text)
    assert parsed is not None
    try:
        os.kill(parsed[1], sig)
    except ProcessLookupError:
        return "gone"
    except PermissionError as exc:
        return f"{sig.name} refused: {exc.strerror}"
    return f"{sig.name} sent"


def wait_gone(text: str, seconds: float) -> bool:
    """Wait up to ``seconds`` for the process to be gone (bounded: this runs in a tick)."""
    deadline = time.monotonic() + seconds
    while True:
        if probe(text) == "gone":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
