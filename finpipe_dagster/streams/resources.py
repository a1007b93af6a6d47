"""Running the long-lived streams (producer, Spark query) under Dagster Pipes."""

from __future__ import annotations

import collections
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster import (
    ConfigurableResource,
    DagsterExecutionInterruptedError,
    Failure,
    OpExecutionContext,
    PipesClientCompletedInvocation,
    PipesSubprocessClient,
    open_pipes_session,
)
from dagster_pipes import PipesExtras

from finpipe.health import FINAL_KEY, PRODUCER, PROGRESS_KEY, RUN_ID_ENV, SPARK
from finpipe.settings import Settings
from finpipe_dagster.streams import processes
from finpipe_dagster.streams.pipes_bridge import bridge_command
from finpipe_dagster.streams.policy import Policy

STDERR_TAIL_LINES = 40
LAST_ERROR_CHARS = 400

STREAM_MODULES = {PRODUCER: "producer.cli", SPARK: "spark.cli"}
"""The entry modules of ``finpipe-producer`` and ``finpipe-spark``."""


def stream_command(stream: str) -> list[str]:
    """A stream's entry module, run by this interpreter under the Pipes bridge."""
    return bridge_command(STREAM_MODULES[stream])


_PR_SET_PDEATHSIG = 1
# Loaded here, in the parent: the child between fork and exec only calls it.
_prctl = (
    ctypes.CDLL("libc.so.6", use_errno=True).prctl if sys.platform.startswith("linux") else None
)


def _terminate_with_parent() -> None:
    """In the child: get SIGTERM when the run worker dies, so no stream is orphaned.

    Without it a killed run worker leaves its stream running and the supervisor's
    replacement would be a second copy.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class PipesStreamClient(PipesSubprocessClient):
    """``PipesSubprocessClient`` for processes that run until told to stop.

    The command reports through the Pipes bridge (``pipes_bridge.bridge_command``).
    Differences from the stock client: termination sends SIGTERM (the streams' clean
    shutdown signal) and SIGKILL after ``termination_timeout_seconds``; the child dies
    with the run worker; and a zero exit without the child's final report is a failure,
    because only the final report proves the stream flushed and stopped cleanly.
    """

    def __init__(
        self, env: Mapping[str, str] | None = None, termination_timeout_seconds: float = 60
    ):
        super().__init__(
            env=env,
            forward_termination=True,
            termination_timeout_seconds=termination_timeout_seconds,
        )

    def run(  # type: ignore[override]
        self,
        *,
        context: OpExecutionContext,
        command: str | Sequence[str],
        extras: PipesExtras | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        heartbeat_path: Path | None = None,
    ) -> PipesClientCompletedInvocation:
        with open_pipes_session(
            context=context,
            context_injector=self.context_injector,
            message_reader=self.message_reader,
            extras=extras,
        ) as session:
            process = subprocess.Popen(
                command,
                cwd=cwd or self.cwd,
                env={
                    **os.environ,
                    **self.env,
                    **(env or {}),
                    **session.get_bootstrap_env_vars(),
                    RUN_ID_ENV: context.run_id,
                },
                stderr=subprocess.PIPE,
                preexec_fn=_terminate_with_parent,
            )
            tail = _forward_stderr(process)
            # Recorded before anything else: the supervisor confirms this process gone
            # before it ever starts a replacement.
            context.instance.add_run_tags(
                context.run_id, {processes.PROCESS_TAG: processes.identity(process.pid)}
            )
            context.log.info(f"[finpipe] started {command} as pid {process.pid}")
            try:
                process.wait()
            except DagsterExecutionInterruptedError:
                self._stop(context, process)
                raise
            finally:
                if process.poll() is None:
                    self._stop(context, process)
                self._record_exit(context, process, tail, heartbeat_path)
            invocation = PipesClientCompletedInvocation(session)
        if process.returncode != 0:
            raise Failure(
                f"{command[0] if isinstance(command, list) else command} exited with code "
                f"{process.returncode}: {_tag_error(context)}"
            )
        if not has_final_report(invocation.get_custom_messages()):
            raise Failure(
                "the stream exited with code 0 but sent no final report: it did not shut "
                "down cleanly (killed, or crashed before reporting)"
            )
        return invocation

    def _record_exit(
        self,
        context: OpExecutionContext,
        process: subprocess.Popen[bytes],
        tail: _StderrTail,
        heartbeat_path: Path | None,
    ) -> None:
        tail.join()
        tags = {processes.EXITED_TAG: str(process.returncode)}
        if process.returncode != 0:
            beat = _read_json(heartbeat_path)
            own = beat if beat and beat.get("run_id") == context.run_id else None
            tags[processes.LAST_ERROR_TAG] = last_error(tail.lines, own, process.returncode)
            if own and PROGRESS_KEY in own:
                progressed = own[PROGRESS_KEY]
                tags[processes.PROGRESSED_UNTIL_TAG] = (
                    processes.NEVER_PROGRESSED if progressed is None else str(progressed)
                )
        context.instance.add_run_tags(context.run_id, tags)

    def _stop(self, context: OpExecutionContext, process: subprocess.Popen[bytes]) -> None:
        context.log.info(f"[finpipe] terminating: SIGTERM to pid {process.pid}")
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=self.termination_timeout_seconds)
        except subprocess.TimeoutExpired:
            context.log.warning(
                f"[finpipe] pid {process.pid} ignored SIGTERM for "
                f"{self.termination_timeout_seconds}s: SIGKILL"
            )
            process.kill()
            process.wait()


class _StderrTail:
    def __init__(self, thread: threading.Thread, lines: collections.deque[str]) -> None:
        self.thread = thread
        self.lines = lines

    def join(self) -> None:
        self.thread.join(timeout=5)


def _forward_stderr(process: subprocess.Popen[bytes]) -> _StderrTail:
    """Copy the child's stderr to ours (the run's captured log) and keep its last lines."""
    lines: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    def pump() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            os.write(2, raw)
            lines.append(raw.decode("utf-8", "replace").rstrip())

    thread = threading.Thread(target=pump, name=f"stderr-{process.pid}", daemon=True)
    thread.start()
    return _StderrTail(thread, lines)


def _read_json(path: Path | None) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        return None


def _tag_error(context: OpExecutionContext) -> str:
    run = context.instance.get_run_by_id(context.run_id)
    return (run.tags.get(processes.LAST_ERROR_TAG) if run else None) or "see the run's logs"


_JVM_LOG_LINE = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d [A-Z]+ ")
"""A line of the Spark JVM's own log (log4j's ``yy/MM/dd HH:mm:ss LEVEL``): its warnings
while a dependency is away are noise, not the error a stream reports."""


def last_error(lines: Iterable[str], heartbeat: dict[str, Any] | None, code: int | None) -> str:
    """Why a stream process failed, for the supervisor's decision and the alert.

    A stream prints a fault no retry fixes as plain text on stderr (a settings error names
    the variable); other errors are JSON log lines at level error, or in the heartbeat.
    """
    text_lines, json_error = [], None
    for line in lines:
        if not line.strip() or _JVM_LOG_LINE.match(line):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            text_lines.append(line.strip())
            continue
        if isinstance(record, dict) and record.get("level") in {"error", "critical"}:
            json_error = str(record.get("error") or record.get("event"))
            text_lines = []  # plain text before a later error line is older news
    beat_error = heartbeat and (heartbeat.get("error") or heartbeat.get("last_error"))
    found = " ".join(text_lines[-4:]) or json_error or beat_error or f"exit code {code}"
    return " ".join(str(found).split())[:LAST_ERROR_CHARS]


def has_final_report(messages: Sequence[Any]) -> bool:
    return any(isinstance(m, dict) and m.get(FINAL_KEY) is True for m in messages)


class SupervisionPolicy(ConfigurableResource):
    """How the supervisor sensors keep each stream alive (see ``streams/policy.py``).

    Unset fields take the ``SUPERVISOR_*`` settings; tests set them to shorten a drill.
    """

    stale_heartbeat_seconds: float | None = None
    """A STARTED run whose stream has not reported for this long is stuck: replace it."""
    startup_grace_seconds: float | None = None
    """Time a new run gets before its first heartbeat is due (Spark starts slowly)."""
    base_backoff_seconds: float | None = None
    max_backoff_seconds: float | None = None
    stable_run_seconds: float | None = None
    """A run whose stream has progressed this long is healthy: it ends a failure streak and
    its alert (a process that is alive but cannot reach Kafka is not progressing)."""
    alert_after_failures: int | None = None
    """Failures in a row after which an alert says the stream keeps failing."""
    kill_grace_seconds: float | None = None
    """How long an old process gets after SIGTERM before SIGKILL."""

    def policy(self, settings: Settings) -> Policy:
        def pick(value: float | None, default: float) -> float:
            return default if value is None else value

        return Policy(
            stale_heartbeat_seconds=pick(
                self.stale_heartbeat_seconds, settings.supervisor_stale_heartbeat_seconds
            ),
            startup_grace_seconds=pick(
                self.startup_grace_seconds, settings.supervisor_startup_grace_seconds
            ),
            base_backoff_seconds=pick(
                self.base_backoff_seconds, settings.supervisor_base_backoff_seconds
            ),
            max_backoff_seconds=pick(
                self.max_backoff_seconds, settings.supervisor_max_backoff_seconds
            ),
            stable_run_seconds=pick(
                self.stable_run_seconds, settings.supervisor_stable_run_seconds
            ),
            alert_after_failures=int(
                pick(self.alert_after_failures, settings.supervisor_alert_after_failures)
            ),
            kill_grace_seconds=pick(
                self.kill_grace_seconds, settings.supervisor_kill_grace_seconds
            ),
        )
