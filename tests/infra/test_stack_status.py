"""`make status` lists the Spark UI where the running job says it listens."""

from __future__ import annotations

import os
from pathlib import Path

from finpipe import health
from finpipe.settings import load_settings
from infra.stack import spark_ui_row, status_rows


def test_the_spark_ui_row_follows_the_running_jobs_heartbeat(tmp_path: Path) -> None:
    settings = load_settings(FINPIPE_HOME=tmp_path, SPARK_UI_PORT=4050)
    assert spark_ui_row(settings) == {
        "name": "spark ui",
        "state": "not running",
        "pid": "-",
        "url": "http://127.0.0.1:4050",
        "log": "-",
    }
    beat = {"pid": os.getpid(), "status": "running", "spark_ui_url": "http://127.0.0.1:4051"}
    health.write_json_atomic(health.health_path(settings, "spark"), beat)
    row = spark_ui_row(settings)
    assert (row["state"], row["url"], row["pid"]) == (
        "running",
        beat["spark_ui_url"],
        str(os.getpid()),
    )
    assert row in status_rows(settings)
    health.write_json_atomic(health.health_path(settings, "spark"), {**beat, "status": "stopped"})
    assert spark_ui_row(settings)["state"] == "not running"


def test_status_lists_every_metrics_endpoint_and_whether_it_answers(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from finpipe.metrics_endpoint import MetricsEndpoint
    from tests.support.network import free_port

    ports = {"producer": free_port(), "spark": free_port(), "control": free_port()}
    settings = load_settings(
        FINPIPE_HOME=tmp_path,
        PRODUCER_METRICS_PORT=ports["producer"],
        SPARK_METRICS_PORT=ports["spark"],
        CONTROL_METRICS_PORT=ports["control"],
        PROMETHEUS_ENABLED=True,
        PROMETHEUS_PORT=free_port(),
    )
    rows = {row["name"]: row for row in status_rows(settings)}
    for name in ("producer", "spark"):
        row = rows[f"{name} metrics"]
        assert (row["url"], row["state"]) == (
            f"http://127.0.0.1:{ports[name]}/metrics",
            "not answering",
        )
    assert rows["control-metrics"]["url"] == f"http://127.0.0.1:{ports['control']}/metrics"
    assert rows["prometheus"]["url"] == f"http://127.0.0.1:{settings.prometheus_port}"
    with MetricsEndpoint(CollectorRegistry(), "127.0.0.1", ports["spark"], "SPARK_METRICS_PORT"):
        assert {row["name"]: row for row in status_rows(settings)}["spark metrics"]["state"] == (
            "answering"
        )
    off = load_settings(FINPIPE_HOME=tmp_path, PRODUCER_METRICS_PORT=0, CONTROL_METRICS_PORT=0)
    names = {row["name"] for row in status_rows(off)}
    assert "producer metrics" not in names and "control-metrics" not in names
    assert "spark metrics" in names and "prometheus" not in names
