"""Health reporting of the long-running streams (producer, Spark query).

A stream reports through one ``StreamReporter``:

* a heartbeat file ``<FINPIPE_HOME>/state/<stream>_health.json``, replaced atomically,
  that Dagster's supervisor sensors, ``make status`` and the dashboard read;
* to a ``ReportSink``, when the process that runs the stream installed one with
  ``reporting_to``: the heartbeats called with ``log=True`` as log lines, and the final
  report of a clean exit. Under Dagster, ``finpipe_dagster/streams/pipes_bridge.py``
  installs a sink that speaks Dagster Pipes, so the core and the streams import nothing
  of Dagster. Only the final report is a Pipes custom message: the run worker keeps every
  custom message in memory until the run ends, and a stream runs for weeks.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from finpipe.settings import Settings

PRODUCER = "producer"
SPARK = "spark"
STREAMS = (PRODUCER, SPARK)
"""The long-running streams, by the name they report health under (and their Dagster jobs,
supervisors and run tags use)."""

HEARTBEAT_KEY = "heartbeat_ts"
FINAL_KEY = "final"
RUN_ID_ENV = "FINPIPE_RUN_ID"
"""Set by the launcher (Dagster's stream jobs) to the run the process belongs to."""
RUN_ID_KEY = "run_id"
PROGRESS_KEY = "progress_ts"
"""When the stream last showed that it does its work, not only that it is alive: for
Spark, the query's last progress or idle report, each of which needed an answer from
Kafka. ``null`` while it has shown none yet. A supervisor calls a run healthy only once
it has progressed for the stable time; a heartbeat without this key (the producer, which
rides out an outage instead of failing) is judged by its heartbeat time."""


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


class ReportSink(Protocol):
    """Where a stream's reports go besides its heartbeat file (the process's launcher)."""

    def log(self, text: str) -> None: ...

    def final(self, payload: dict[str, Any]) -> None: ...


_sinks: list[ReportSink] = []


@contextlib.contextmanager
def reporting_to(sink: ReportSink) -> Iterator[None]:
    """Every ``StreamReporter`` entered inside this block also reports to ``sink``."""
    _sinks.append(sink)
    try:
        yield
    finally:
        _sinks.remove(sink)


class StreamReporter:
    """Use as a context manager around a stream's main loop."""

    def __init__(self, settings: Settings, stream: str) -> None:
        self.stream = stream
        self.path = health_path(settings, stream)
        self._sink: ReportSink | None = None

    def __enter__(self) -> StreamReporter:
        self._sink = _sinks[-1] if _sinks else None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sink = None

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
        if self._sink is not None:
            if payload.get(FINAL_KEY) is True:
                self._sink.final(payload)
            if log:
                self._sink.log(json.dumps(payload, default=str))

    def final(self, counters: dict[str, Any]) -> None:
        """The last report of a clean exit."""
        self.heartbeat({**counters, FINAL_KEY: True}, log=True)


# --- the producer's receive log and backlog -----------------------------------------------

PRODUCER_BACKLOG_KEYS = (
    "backlog_records",
    "oldest_undelivered_age_s",
    "log_bytes",
    "log_capacity_bytes",
    "log_state",
    "kafka_state",
)
"""Fields of the producer heartbeat about what is received but not yet in Kafka."""


def producer_log_state(beat: dict[str, Any]) -> str:
    """``ok``, ``near capacity`` or ``reading paused: <why>`` from a producer heartbeat."""
    if beat.get("reading_paused"):
        return f"reading paused: {beat['reading_paused']}"
    if beat.get("log_near_capacity"):
        return "near capacity"
    return "ok"


def producer_incidents(
    beat: dict[str, Any] | None, backlog_alert_seconds: float
) -> list[tuple[str, str]]:
    """(key, text) of each producer problem an alert should be about, from its heartbeat."""
    if not beat:
        return []
    found = []
    age = beat.get("oldest_undelivered_age_s")
    if age is not None and float(age) > backlog_alert_seconds:
        found.append(
            (
                "producer_backlog",
                f"the producer's oldest trade not yet in Kafka was received {float(age):.0f}s "
                f"ago (PRODUCER_BACKLOG_ALERT_SECONDS={backlog_alert_seconds:g}); "
                f"{beat.get('backlog_records')} records wait in the receive log. "
                f"Kafka: {beat.get('kafka_state')}",
            )
        )
    state = producer_log_state(beat)
    if state != "ok":
        used = int(beat.get("log_bytes") or 0) / 1e6
        cap = int(beat.get("log_capacity_bytes") or 0) / 1e6
        found.append(
            (
                "producer_log",
                f"the producer's receive log is {state} ({used:.0f} of {cap:.0f} MB, "
                "PRODUCER_LOG_MAX_MB); it empties as Kafka takes the backlog",
            )
        )
    return found
