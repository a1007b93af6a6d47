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
