"""`finpipe-control-metrics`: the lake's and the control plane's Prometheus endpoint.

What it tells is what the control plane decides from: the lake's last update as Dagster
recorded it (``processed_trades`` materializations, which drive freshness), the
freshness state, the alert outbox's open incidents, and each stream's supervision as its
supervisor sensor would decide now. Every scrape reads those same sources through the
same functions the alert and supervisor sensors use, so Prometheus and Dagster never
disagree.

Why a process of its own, started by ``make up`` beside the Dagster daemon, and not
inside the code location: Dagster runs the code location in several processes at once
(one under the webserver, one under the daemon, replaced on every reload, and none while
only the daemon's sensors run in some deployments): a port bound there would be fought
over or vanish on a reload. A sensor only runs in ticks. This exporter reads Dagster's
instance (``DAGSTER_HOME``, the same storage as the daemon) and the files under
``FINPIPE_HOME/state``; it changes nothing.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

import structlog
from dagster import DagsterInstance, RunsFilter
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from finpipe import exit_codes
from finpipe.health import STREAMS, heartbeat_age_seconds, read_health
from finpipe.logs import configure_logging
from finpipe.metrics_endpoint import MetricsEndpoint
from finpipe.settings import Settings, SettingsError, load_settings
from finpipe_dagster.alerts.outbox import AlertOutbox, outbox_path
from finpipe_dagster.alerts.sensors import lake_age_seconds, lake_last_update
from finpipe_dagster.instance import STREAM_TAG
from finpipe_dagster.streams.decisions import current_decision
from finpipe_dagster.streams.policy import Action
from finpipe_dagster.streams.resources import SupervisionPolicy
from streamlit_app.status import Level, freshness_level

log = structlog.get_logger("control-metrics")

INCIDENT_KINDS = ("lake_stale", "check_failed", "stream", "producer_backlog", "producer_log")
"""The alert sensor's incident keys, up to their first ``:`` (finpipe_dagster.alerts)."""
DECISIONS: tuple[Action, ...] = (
    "launch",
    "skip",
    "wait",
    "replace",
    "stop_old",
    "wait_old",
    "stopped",
)


class ControlPlaneCollector(Collector):
    def __init__(
        self,
        settings: Settings,
        instance: Callable[[], DagsterInstance],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.instance = instance
        self.clock = clock
        self.outbox = AlertOutbox(outbox_path(settings.state_dir))
        self.policy = SupervisionPolicy().policy(settings)

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        instance = self.instance()
        yield from self._lake(instance, now)
        yield from self._incidents()
        yield from self._streams(instance, now)

    def _lake(self, instance: DagsterInstance, now: float) -> Iterator[Metric]:
        last = lake_last_update(instance)
        if last is not None:
            yield GaugeMetricFamily(
                "finpipe_lake_last_update_timestamp_seconds",
                "When processed_trades was last updated, as Dagster recorded it (Unix time).",
                value=last,
            )
        yield GaugeMetricFamily(
            "finpipe_lake_staleness_seconds",
            "Seconds since the lake's last update (since watching started when none came); "
            "the alert sensor's lake_stale incident opens past FRESHNESS_FAIL_SECONDS.",
            value=lake_age_seconds(last, self.outbox.watching_since(now), now),
        )
        state = GaugeMetricFamily(
            "finpipe_lake_freshness_state",
            "The lake's freshness against FRESHNESS_WARN/FAIL_SECONDS (1: current state).",
            labels=["state"],
        )
        current = freshness_level(None if last is None else now - last, self.settings)
        for level in Level:
            state.add_metric([level.value], int(level == current))
        yield state
        for name, seconds in (
            ("finpipe_lake_freshness_warn_seconds", self.settings.freshness_warn_seconds),
            ("finpipe_lake_freshness_fail_seconds", self.settings.freshness_fail_seconds),
        ):
            yield GaugeMetricFamily(name, "The freshness window setting.", value=seconds)

    def _incidents(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "finpipe_open_incidents",
            "Incidents the alert sensor has open (an alert went out, no recovery yet), by kind.",
            labels=["kind"],
        )
        counts = dict.fromkeys(INCIDENT_KINDS, 0)
        for key in self.outbox.open_incidents():
            kind = key.split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
        for kind, count in counts.items():
            family.add_metric([kind], count)
        yield family

    def _streams(self, instance: DagsterInstance, now: float) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "finpipe_stream_up",
            "1 while the stream's run is healthy as its supervisor judges it (alive, "
            "heartbeat fresh, progressing).",
            labels=["stream"],
        )
        decision_family = GaugeMetricFamily(
            "finpipe_stream_supervisor_decision",
            "What the stream's supervisor would decide now (1: the current decision).",
            labels=["stream", "decision"],
        )
        failures = GaugeMetricFamily(
            "finpipe_stream_failures_in_row",
            "Failed runs in a row of the stream (0 once a run stays healthy).",
            labels=["stream"],
        )
        restarts = CounterMetricFamily(
            "finpipe_stream_restarts",
            "Runs of the stream launched after its first (Dagster's run history).",
            labels=["stream"],
        )
        beat_age = GaugeMetricFamily(
            "finpipe_stream_heartbeat_age_seconds",
            "Seconds since the stream's last heartbeat.",
            labels=["stream"],
        )
        for stream in STREAMS:
            decision = current_decision(instance, self.settings, self.policy, stream)
            up.add_metric([stream], int(decision.healthy))
            for action in DECISIONS:
                decision_family.add_metric([stream, action], int(decision.action == action))
            failures.add_metric([stream], decision.failures_in_row)
            runs = instance.get_runs_count(RunsFilter(tags={STREAM_TAG: stream}))
            restarts.add_metric([stream], max(0, runs - 1))
            age = heartbeat_age_seconds(read_health(self.settings, stream), now)
            if age is not None:
                beat_age.add_metric([stream], age)
        yield from (up, decision_family, failures, restarts, beat_age)


def control_plane_endpoint(
    settings: Settings, instance: Callable[[], DagsterInstance]
) -> MetricsEndpoint:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector(settings, instance))
    return MetricsEndpoint(
        registry, settings.metrics_host, settings.control_metrics_port, "CONTROL_METRICS_PORT"
    )


def main() -> int:
    configure_logging()
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return exit_codes.NO_RETRY
    if not settings.control_metrics_port:
        print("CONTROL_METRICS_PORT=0: the control-plane endpoint is off", file=sys.stderr)
        return exit_codes.NO_RETRY
    instance = DagsterInstance.get()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with control_plane_endpoint(settings, lambda: instance) as endpoint:
        log.info("control-plane metrics", url=endpoint.url)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
