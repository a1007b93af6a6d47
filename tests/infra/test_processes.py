"""ManagedProcess against real child processes on loopback."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest

from infra.processes import (
    ManagedProcess,
    ServiceError,
    pid_alive,
    port_open,
    start_together,
    stop_together,
)
from tests.support.network import free_port


def _http_server(home: Path, port: int) -> ManagedProcess:
    return ManagedProcess(
        name="web",
        argv=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        home=home,
        ports=[("127.0.0.1", port)],
        ready_timeout=20,
        stop_timeout=5,
    )


def test_start_is_idempotent_and_stop_leaves_nothing(tmp_path: Path) -> None:
    port = free_port()
    proc = _http_server(tmp_path, port)
    pid = proc.start()
    assert port_open("127.0.0.1", port)
    assert proc.start() == pid  # a second start reuses the live process
    assert proc.stop() is True
    assert not pid_alive(pid)
    assert not port_open("127.0.0.1", port)
    assert proc.stop() is False
    assert "starting web" in proc.log_file.read_text()


def test_busy_port_is_reported_with_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServiceError, match="already in use"):
            _http_server(tmp_path, port).start()


def test_a_crash_at_start_names_the_log_file(tmp_path: Path) -> None:
    proc = ManagedProcess(
        name="crasher",
        argv=[sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"],
        home=tmp_path,
        ports=[("127.0.0.1", free_port())],
        ready_timeout=20,
    )
    with pytest.raises(ServiceError) as err:
        proc.start()
    assert str(proc.log_file) in str(err.value)
    assert "boom: bad config" in str(err.value)


def test_processes_ready_only_together_start_together_and_stop_together(tmp_path: Path) -> None:
    """Like the brokers of a KRaft quorum: each is ready only once the other runs, so
    starting them one after the other would wait for ever."""
    ports = [free_port(), free_port()]
    procs = [
        ManagedProcess(
            name=f"web-{i}",
            argv=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            home=tmp_path,
            ports=[("127.0.0.1", port)],
            ready=lambda other=ports[1 - i]: port_open("127.0.0.1", other),
            ready_timeout=20,
            stop_timeout=5,
        )
        for i, port in enumerate(ports)
    ]
    pids = start_together(procs)
    assert all(pid_alive(pid) for pid in pids)
    assert start_together(procs) == pids  # running ones are reused
    assert stop_together(procs) == ["web-0", "web-1"]
    assert not [pid for pid in pids if pid_alive(pid)]
    assert stop_together(procs) == []


def test_a_started_process_takes_sigint_and_sigterm_even_if_its_starter_ignored_them(
    tmp_path: Path,
) -> None:
    """`make up` in the background of a script starts with SIGINT ignored; what it starts
    must not inherit that (Dagster would copy it onto SIGTERM)."""
    saved = (
        signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.signal(signal.SIGTERM, signal.SIG_IGN),
    )
    port = free_port()
    proc = _http_server(tmp_path, port)
    try:
        pid = proc.start()
        ignored = int(
            next(
                line.split()[1]
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("SigIgn:")
            ),
            16,
        )
        assert not ignored & (1 << (signal.SIGINT - 1)), "SIGINT is ignored"
        assert not ignored & (1 << (signal.SIGTERM - 1)), "SIGTERM is ignored"
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
        proc.stop()
