"""The control-plane endpoint reads what the alert and supervisor sensors decide from."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetMaterialization, DagsterInstance, instance_for_test
from prometheus_client import CollectorRegistry, generate_latest

from finpipe.health import StreamReporter
from finpipe.settings import Settings, load_settings
from finpipe_dagster.alerts.outbox import AlertOutbox, outbox_path
from finpipe_dagster.control_metrics import (
    INCIDENT_KINDS,
    ControlPlaneCollector,
    control_plane_endpoint,
)
from finpipe_dagster.lake.assets import PROCESSED_TRADES
from tests.support.metrics import parse, scrape, value
from tests.support.network import free_port, listening_addresses


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        FINPIPE_HOME=tmp_path, FRESHNESS_WARN_SECONDS=60, FRESHNESS_FAIL_SECONDS=300
    )


def _samples(settings: Settings, instance: DagsterInstance, now: float) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector(settings, lambda: instance, clock=lambda: now))
    return parse(generate_latest(registry).decode())


def test_a_lake_never_updated_is_stale_since_watching_started(
    settings: Settings, instance: DagsterInstance
) -> None:
    outbox = AlertOutbox(outbox_path(settings.state_dir))
    since = outbox.watching_since(1_000.0)
    samples = _samples(settings, instance, now=since + 400)
    assert value(samples, "finpipe_lake_staleness_seconds") == 400
    assert value(samples, "finpipe_lake_freshness_state", state="unknown") == 1
    assert not any(n == "finpipe_lake_last_update_timestamp_seconds" for n, _ in samples)
    for stream in ("producer", "spark"):
        assert value(samples, "finpipe_stream_up", stream=stream) == 0
        assert value(samples, "finpipe_stream_restarts_total", stream=stream) == 0
        decided = [
            labels
            for (name, labels), v in samples.items()
            if name == "finpipe_stream_supervisor_decision"
            and ("stream", stream) in labels
            and v == 1
        ]
        assert decided == [(("decision", "launch"), ("stream", stream))]


def test_staleness_freshness_and_incidents_follow_dagster_and_the_outbox(
    settings: Settings, instance: DagsterInstance
) -> None:
    instance.report_runless_asset_event(AssetMaterialization(PROCESSED_TRADES))
    updated = instance.get_latest_materialization_event(PROCESSED_TRADES).timestamp
    outbox = AlertOutbox(outbox_path(settings.state_dir))
    outbox.reconcile(
        {"lake_stale": "stale", "check_failed:a": "a", "check_failed:b": "b"},
        updated,
        opened=str,
        recovered=lambda text, _: text,
    )
    with StreamReporter(settings, "producer") as reporter:
        reporter.heartbeat({"frames": 1})
    for age, state in ((30, "ok"), (120, "warn"), (301, "fail")):
        samples = _samples(settings, instance, now=updated + age)
        assert value(samples, "finpipe_lake_last_update_timestamp_seconds") == updated
        assert value(samples, "finpipe_lake_staleness_seconds") == pytest.approx(age)
        assert value(samples, "finpipe_lake_freshness_state", state=state) == 1
        assert sum(v for (n, _), v in samples.items() if n == "finpipe_lake_freshness_state") == 1
    counts = {kind: value(samples, "finpipe_open_incidents", kind=kind) for kind in INCIDENT_KINDS}
    assert counts == {
        "lake_stale": 1,
        "check_failed": 2,
        "stream": 0,
        "producer_backlog": 0,
        "producer_log": 0,
    }
    assert value(samples, "finpipe_stream_heartbeat_age_seconds", stream="producer") >= 0
    assert not any(
        n == "finpipe_stream_heartbeat_age_seconds" and ("stream", "spark") in labels
        for n, labels in samples
    )


def test_the_endpoint_serves_on_loopback(settings: Settings, instance: DagsterInstance) -> None:
    port = free_port()
    settings = settings.model_copy(update={"control_metrics_port": port})
    with control_plane_endpoint(settings, lambda: instance) as endpoint:
        assert listening_addresses(port) == {"127.0.0.1"}
        samples = scrape(endpoint.url)
    assert value(samples, "finpipe_lake_staleness_seconds") < time.time()
