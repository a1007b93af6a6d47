"""docker-compose.yml agrees with the settings module and the Dockerfile.

No Docker engine runs here. The file is validated by Docker Compose itself (built from
its Go module by `make provision`: `docker-compose config` needs no engine) and parsed
and cross-checked against the settings module.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from finpipe import contracts
from finpipe.settings import Settings, SettingsError, load_settings
from infra import artifacts

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def _published(service: str) -> set[int]:
    """Host ports ("127.0.0.1:HOST:CONTAINER")."""
    return {int(p.split(":")[-2]) for p in SERVICES[service].get("ports", [])}


def test_every_platform_service_is_there_and_zookeeper_is_gone() -> None:
    expected = {"kafka", "minio", "setup", "simulator", "dagster-webserver", "dagster-daemon",
                "streamlit", "control-metrics", "kafka-ui", "spark-master",
                "spark-worker"}  # fmt: skip
    assert expected <= set(SERVICES)
    assert not any("zookeeper" in name for name in SERVICES)
    assert SERVICES["kafka-ui"]["profiles"] == ["kafka-ui"]
    assert _published("kafka-ui") == {8082}


def test_ports_match_the_settings_defaults() -> None:
    defaults = Settings.model_construct()
    assert _published("kafka") == {9092}
    assert _published("minio") == {9000, defaults.minio_console_port}
    assert _published("dagster-webserver") == {defaults.dagster_port}
    assert _published("streamlit") == {defaults.streamlit_port}
    assert _published("simulator") == {defaults.simulator_port}
    assert _published("dagster-daemon") == {
        defaults.spark_ui_port,
        defaults.producer_metrics_port,
        defaults.spark_metrics_port,
    }
    assert _published("control-metrics") == {defaults.control_metrics_port}
    for service in SERVICES.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{port} must bind to loopback"


def test_finpipe_services_get_settings_that_load() -> None:
    kafka_env = _env("kafka")
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name in (
        "setup",
        "simulator",
        "dagster-webserver",
        "dagster-daemon",
        "streamlit",
        "control-metrics",
    ):
        env = _env(name)
        assert env["KAFKA_SERVER"] == "kafka:9092"
        assert env["S3_ENDPOINT_URL"] == "http://minio:9000"
        # The object-store keys have no default (minio:9000 is not loopback, where example
        # keys are refused): with keys of one's own the services' settings load.
        assert env["S3_ACCESS_KEY"].startswith("${S3_ACCESS_KEY:?")
        assert env["S3_SECRET_KEY"].startswith("${S3_SECRET_KEY:?")
        own = {**env, "S3_ACCESS_KEY": "own-access-key", "S3_SECRET_KEY": "own-secret-key-42"}
        settings = load_settings(**own)
        assert settings.s3_bucket == contracts.LAKE_BUCKET
        for example in ("finpipe", "finpipe-local-secret", "minioadmin"):
            with pytest.raises(SettingsError, match="S3_ACCESS_KEY / S3_SECRET_KEY"):
                load_settings(**{**own, "S3_SECRET_KEY": example})
    assert "workspace.yaml" in SERVICES["dagster-daemon"]["command"]
    assert SERVICES["streamlit"]["command"][0] == "finpipe-dashboard"


def test_compose_references_files_that_exist() -> None:
    for path in ("Dockerfile", "workspace.yaml", "streamlit_app/app.py"):
        assert (ROOT / path).is_file(), path


@pytest.mark.integration  # a real tool, built by `make provision` (once, a few minutes)
def test_docker_compose_accepts_the_file_with_every_profile() -> None:
    compose = artifacts.compose_binary(load_settings().cache_dir)
    base = [str(compose), "-f", str(ROOT / "docker-compose.yml")]
    keyless = {k: v for k, v in os.environ.items() if not k.startswith("S3_")}
    refused = subprocess.run(
        [*base, "config", "--quiet"], capture_output=True, text=True, cwd=ROOT, env=keyless
    )
    assert refused.returncode != 0 and "S3_ACCESS_KEY" in refused.stderr
    keyed = {**keyless, "S3_ACCESS_KEY": "own-access-key", "S3_SECRET_KEY": "own-secret-key"}
    for profiles in ([], ["--profile", "*"]):
        result = subprocess.run(
            [*base, *profiles, "config", "--quiet"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=keyed,
        )
        assert result.returncode == 0, result.stderr
    listed = subprocess.run(
        [*base, "--profile", "*", "config", "--services"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=keyed,
        check=True,
    )
    assert set(listed.stdout.split()) == set(SERVICES)
    version = subprocess.run([str(compose), "version"], capture_output=True, text=True)
    assert artifacts.COMPOSE_VERSION in version.stdout
