"""Running the long-lived streams (producer, Spark query) under Dagster Pipes."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
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

from finpipe.health import FINAL_KEY, PRODUCER, SPARK
from finpipe_dagster.streams.pipes_bridge import bridge_command
from finpipe_dagster.streams.policy import Policy

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
                },
                preexec_fn=_terminate_with_parent,
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
            invocation = PipesClientCompletedInvocation(session)
        if process.returncode != 0:
            raise Failure(
                f"{command[0] if isinstance(command, list) else command} exited with code "
                f"{process.returncode}; see the run's logs for its last lines"
            )
        if not has_final_report(invocation.get_custom_messages()):
            raise Failure(
                "the stream exited with code 0 but sent no final report: it did not shut "
                "down cleanly (killed, or crashed before reporting)"
            )
        return invocation

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


def has_final_report(messages: Sequence[Any]) -> bool:
    return any(isinstance(m, dict) and m.get(FINAL_KEY) is True for m in messages)


class SupervisionPolicy(ConfigurableResource):
    """How the supervisor sensors keep each stream alive (see ``streams/policy.py``)."""

    stale_heartbeat_seconds: float = Policy.stale_heartbeat_seconds
    """A STARTED run whose stream has not reported for this long is dead: replace it."""
    startup_grace_seconds: float = Policy.startup_grace_seconds
    """Time a new run gets before its first heartbeat is due (Spark starts slowly)."""
    base_backoff_seconds: float = Policy.base_backoff_seconds
    max_backoff_seconds: float = Policy.max_backoff_seconds
    stable_run_seconds: float = Policy.stable_run_seconds
    """A run that lived this long before failing ends the failure streak."""
    give_up_after_failures: int = Policy.give_up_after_failures
    """Failures in a row after which the supervisor stops restarting and alerts."""

    def policy(self) -> Policy:
        return Policy(
            stale_heartbeat_seconds=self.stale_heartbeat_seconds,
            startup_grace_seconds=self.startup_grace_seconds,
            base_backoff_seconds=self.base_backoff_seconds,
            max_backoff_seconds=self.max_backoff_seconds,
            stable_run_seconds=self.stable_run_seconds,
            give_up_after_failures=self.give_up_after_failures,
        )
