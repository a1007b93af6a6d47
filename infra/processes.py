"""Start, watch and stop the platform's local processes.

Each managed process has a pid file and a log file under ``<home>/run`` and
``<home>/logs``. Starting is idempotent (a live pid is reused), readiness is waited for
with a timeout, and every failure names the log file to read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ServiceError(RuntimeError):
    """A service did not start or stop; the message says why and where to look."""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0): it is gone once its thread-group leader is a
    # zombie with no thread left. (A JVM's leader can be a zombie while its other threads,
    # and the sockets they hold, still run.)
    with contextlib.suppress(OSError):
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        if fields["State"].strip().startswith("Z") and int(fields["Threads"]) <= 1:
            return False
    return True


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log yet)"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialize starts across processes (parallel test sessions, two `make up`s)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _default_stop_signals() -> None:
    """In the child, before exec: SIGINT and SIGTERM back to their defaults.

    `make up` run in the background by a non-interactive shell (a script, CI) starts with
    SIGINT ignored, and every process it starts would inherit that. Dagster copies SIGINT's
    disposition onto SIGTERM whenever it passes an interrupt boundary, so the daemon's run
    workers and the ``tail -F`` mirrors of their compute logs would ignore SIGTERM too: each
    run would end a minute late, leaving the mirrors behind, and `make down` would have to
    SIGKILL what it asked to stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class ManagedProcess:
    name: str
    argv: Sequence[str]
    home: Path
    ports: Sequence[tuple[str, int]] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 90.0
    stop_timeout: float = 30.0

    @property
    def pid_file(self) -> Path:
        return self.home / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def is_ready(self) -> bool:
        if not all(port_open(host, port) for host, port in self.ports):
            return False
        return self.ready() if self.ready else True

    def start(self) -> int:
        """Start unless already running; returns the pid. Waits until ready."""
        with self._start_lock():
            pid = self._running_or_spawned()
            self.wait_ready(pid)
            return pid

    def launch(self) -> int:
        """Start unless already running, without waiting until it is ready; returns the pid."""
        with self._start_lock():
            return self._running_or_spawned()

    def _start_lock(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.home / "run" / f"{self.name}.lock")

    def _running_or_spawned(self) -> int:
        pid = self.pid()
        if pid is not None:
            return pid
        busy = [f"{h}:{p}" for h, p in self.ports if port_open(h, p)]
        if busy:
            raise ServiceError(
                f"{self.name}: port {', '.join(busy)} is already in use by a process "
                "finpipe did not start. Stop it (`ss -ltnp` shows which) or point "
                "the settings at it as an external service."
            )
        return self._spawn()

    def _spawn(self) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n--- starting {self.name} at {time.ctime()} ---\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(self.argv),
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_default_stop_signals,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def wait_ready(self, pid: int) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                raise ServiceError(
                    f"{self.name} exited during start-up. Read {self.log_file}; last lines:\n"
                    f"{tail(self.log_file)}"
                )
            if self.is_ready():
                return
            time.sleep(0.3)
        raise ServiceError(
            f"{self.name} was not ready after {self.ready_timeout:.0f}s. "
            f"Read {self.log_file}; last lines:\n{tail(self.log_file)}"
        )

    def stop(self) -> bool:
        """SIGTERM the process group, SIGKILL after the timeout. True if it was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        if not _wait_until_dead(pid, self.stop_timeout):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # stragglers of the group
        # SIGKILL is not instantaneous: wait, so the ports are free when stop() returns.
        if not _wait_until_dead(pid, 15.0):
            raise ServiceError(f"{self.name} (pid {pid}) survived SIGKILL; check `ps {pid}`")
        self.pid_file.unlink(missing_ok=True)
        return True


def start_together(processes: Sequence[ManagedProcess]) -> list[int]:
    """Start processes that become ready only together (the brokers of a KRaft quorum wait
    for a majority of its controllers): launch every one, then wait for each."""
    pids = [process.launch() for process in processes]
    for process, pid in zip(processes, pids, strict=True):
        process.wait_ready(pid)
    return pids


def stop_together(processes: Sequence[ManagedProcess]) -> list[str]:
    """Stop processes at the same time (SIGTERM to all first), so that the last broker of a
    quorum is not left waiting for the controllers stopped before it; returns the names
    of those that were running."""
    running = {process.name: pid for process in processes if (pid := process.pid()) is not None}
    for pid in running.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    for process in processes:
        process.stop()  # waits, SIGKILL after its timeout; tidies the pid file
    return list(running)


def _wait_until_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True
