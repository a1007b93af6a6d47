"""Runs a stream's entry module under Dagster Pipes: ``python -m <this> <module> [args]``.

The streams and the core know nothing of Dagster: a stream reports through
``finpipe.health.StreamReporter``, and this bridge, started by ``PipesStreamClient``,
opens the Pipes session in the stream's own process and installs a ``ReportSink`` that
turns the reporter's log lines into Pipes log messages and its final report into the
custom message the client requires of a clean exit. The target is a module
(``producer.cli``) or a script path (``*.py``), run as ``__main__``.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
from typing import Any

from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, PipesContext, open_dagster_pipes

from finpipe.health import reporting_to

MODULE = "finpipe_dagster.streams.pipes_bridge"


class PipesReportSink:
    def __init__(self, pipes: PipesContext) -> None:
        self._pipes = pipes

    def log(self, text: str) -> None:
        self._pipes.log.info(text)

    def final(self, payload: dict[str, Any]) -> None:
        self._pipes.report_custom_message(payload)


def bridge_command(target: str, *args: str) -> list[str]:
    """The command that runs ``target`` (a module or a script) under this bridge."""
    return [sys.executable, "-m", MODULE, target, *args]


def _run_as_main(target: str, args: list[str]) -> int | str | None:
    sys.argv = [target, *args]
    try:
        if target.endswith(".py"):
            runpy.run_path(target, run_name="__main__")
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        # The stream's exit code is its answer, not an error of the Pipes session.
        return exc.code  # type: ignore[return-value]
    return 0


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(f"usage: python -m {MODULE} <module | script.py> [args...]")
    target, args = sys.argv[1], sys.argv[2:]
    with contextlib.ExitStack() as stack:
        if DAGSTER_PIPES_CONTEXT_ENV_VAR in os.environ:
            pipes = stack.enter_context(open_dagster_pipes())
            stack.enter_context(reporting_to(PipesReportSink(pipes)))
        code = _run_as_main(target, args)
    sys.exit(code)


if __name__ == "__main__":
    main()
