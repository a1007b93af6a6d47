"""Health reporting of the long-running streams (producer, Spark query).

A stream reports through one ``StreamReporter``:

* a heartbeat file ``<FINPIPE_HOME>/state/<stream>_health.json``, replaced atomically,
  that Dagster's supervisor sensors, ``make status`` and the dashboard read;
* when launched by Dagster Pipes, the counters as log lines that stream into the
  Dagster run (the heartbeats called with ``log=True``), and a final report on clean
  exit as a Pipes custom message, without which the Dagster job counts the process as
  failed. Only the final report is a custom message: the run worker keeps every custom
  message in memory until the run ends, and a stream runs for weeks.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from finpipe.settings import Settings

HEARTBEAT_KEY = "heartbeat_ts"
FINAL_KEY = "final"
RUN_ID_ENV = "FINPIPE_RUN_ID"
"""Set by the launcher (Dagster's stream jobs) to the run the process belongs to."""
RUN_ID_KEY = "run_id"
LAST_BATCH_BY_DATE_KEY = "last_batch_by_trade_date"
"""In the Spark stream's heartbeat: {lake day: last committed batch id that wrote to it}."""


def health_path(settings: Settings, stream: str) -> Path:
    return settings.state_dir / f"{stream}_health.json"


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, default=str))
    os.replace(tmp, path)


def read_health(settings: Settings, stream: str) -> dict[str, Any] | None:
    """The stream's last heartbeat, or None when it never reported."""
    try:
        return json.loads(health_path(settings, stream).read_text())
    except (OSError, ValueError):
        return None


def heartbeat_age_seconds(health: dict[str, Any] | None, now: float | None = None) -> float | None:
    if not health or HEARTBEAT_KEY not in health:
        return None
    return (now if now is not None else time.time()) - float(health[HEARTBEAT_KEY])


class StreamReporter:
    """Use as a context manager around a stream's main loop."""

    def __init__(self, settings: Settings, stream: str) -> None:
        self.stream = stream
        self.path = health_path(settings, stream)
        self._stack = contextlib.ExitStack()
        self._pipes: Any = None

    def __enter__(self) -> StreamReporter:
        from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

        if DAGSTER_PIPES_CONTEXT_ENV_VAR in os.environ:
            self._pipes = self._stack.enter_context(open_dagster_pipes())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    @property
    def under_dagster(self) -> bool:
        return self._pipes is not None

    def heartbeat(self, counters: dict[str, Any], *, log: bool = False) -> None:
        # Run id, host and pid tell a supervisor whose heartbeat this is: a stale beat of
        # an old run never counts for its replacement, and the pid is what it must stop.
        payload = {
            "stream": self.stream,
            RUN_ID_KEY: os.environ.get(RUN_ID_ENV),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            HEARTBEAT_KEY: time.time(),
            **counters,
        }
        write_json_atomic(self.path, payload)
        if self._pipes is not None:
            if payload.get(FINAL_KEY) is True:
                self._pipes.report_custom_message(payload)
            if log:
                self._pipes.log.info(json.dumps(payload, default=str))

    def final(self, counters: dict[str, Any]) -> None:
        """The last report of a clean exit."""
        self.heartbeat({**counters, FINAL_KEY: True}, log=True)
