"""The alert rules, the Prometheus configuration and the Grafana dashboard, checked by
Prometheus's own tool (promtool, provisioned like the server); the drill in
tests/platform/test_platform_drills.py checks them against a live platform."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from finpipe.settings import load_settings
from infra import artifacts, monitoring
from tests.support.prometheus import DASHBOARD, dashboard_expressions

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "monitoring/grafana/provisioning"


@pytest.fixture(scope="module")
def promtool() -> str:
    return str(artifacts.prometheus_binary(load_settings().cache_dir, "promtool"))


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_promtool_checks_the_rules(promtool: str) -> None:
    done = _run([promtool, "check", "rules", str(monitoring.RULES_FILE)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout, done.stdout


def test_the_rules_fire_and_stay_quiet_as_their_unit_tests_say(promtool: str) -> None:
    done = _run([promtool, "test", "rules", str(ROOT / "monitoring/alert-rules.test.yml")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_rule_fails_the_check(promtool: str, tmp_path: Path) -> None:
    broken = tmp_path / "rules.yml"
    rules = yaml.safe_load(monitoring.RULES_FILE.read_text())
    rules["groups"][0]["rules"][0]["expr"] = "finpipe_lake_staleness_seconds >"
    broken.write_text(yaml.safe_dump(rules))
    done = _run([promtool, "check", "rules", str(broken)])
    assert done.returncode != 0 and "FinpipeLakeStale" not in done.stdout


def test_the_generated_prometheus_config_is_valid(promtool: str, tmp_path: Path) -> None:
    settings = load_settings(FINPIPE_HOME=tmp_path, PROMETHEUS_SCRAPE_SECONDS=2)
    path = monitoring.write_prometheus_config(settings)
    done = _run([promtool, "check", "config", str(path)])
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(path.read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert targets == {
        "finpipe_producer": [f"127.0.0.1:{settings.producer_metrics_port}"],
        "finpipe_spark": [f"127.0.0.1:{settings.spark_metrics_port}"],
        "finpipe_control": [f"127.0.0.1:{settings.control_metrics_port}"],
    }
    assert config["global"]["scrape_interval"] == "2s"


def test_the_dashboard_queries_its_provisioned_datasource() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources/finpipe.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"]["uid"] == uid for p in panels)
    assert all(p.get("targets") for p in panels), "a panel without a query"
    expressions = [expr for _, expr in dashboard_expressions()]
    # Every expression names a finpipe metric; the drill checks each returns data.
    assert all(re.search(r"\bfinpipe_\w+|\bup\{", expr) for expr in expressions)
    providers = yaml.safe_load((PROVISIONING / "dashboards/finpipe.yml").read_text())
    assert providers["providers"][0]["type"] == "file"
