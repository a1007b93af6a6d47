"""Secrets travel to the platform's processes by environment only, never on a command
line: any user of the host can read every process's argv (``ps``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from finpipe.settings import load_settings
from infra.stack import components

SECRETS = {
    "S3_ACCESS_KEY": "s3-access-Kq81",
    "S3_SECRET_KEY": "s3-secret-Zu47",
    "SIMULATOR_TOKEN": "simulator-token-Pm09",
    "ALERT_WEBHOOK_URL": "https://hooks.example.com/services/webhook-secret-Lr36",
    "DAGSTER_POSTGRES_URL": "postgresql://dagster:pg-password-Tn75@db.example.com:5432/dagster",
}
FINNHUB_TOKEN = "finnhub-token-Wx52"
SECRET_WORDS = ("Kq81", "Zu47", "Pm09", "Lr36", "Tn75", "Wx52")


@pytest.mark.parametrize("feed", ["simulator", "finnhub"])
def test_no_process_the_stack_starts_has_a_secret_in_its_argv(tmp_path: Path, feed: str) -> None:
    token = FINNHUB_TOKEN if feed == "finnhub" else ""
    settings = load_settings(
        FINPIPE_HOME=tmp_path, FINNHUB_API_TOKEN=token, PROMETHEUS_ENABLED=True, **SECRETS
    )
    processes = {c.name: c.process for c in components(settings) if c.process is not None}
    # Everything runs locally here, the simulator only without a Finnhub token.
    expected = {"kafka", "minio", "dagster-webserver", "dagster-daemon", "streamlit",
                "control-metrics", "prometheus"}  # fmt: skip
    assert set(processes) == expected | ({"simulator"} if feed == "simulator" else set())

    for name, process in processes.items():
        leaked = [arg for arg in process.argv for word in SECRET_WORDS if word in arg]
        assert not leaked, f"{name} has a secret on its command line: {leaked}"
    # The secrets are there, in the environment of the processes that need them.
    assert processes["minio"].env["MINIO_ROOT_PASSWORD"] == SECRETS["S3_SECRET_KEY"]
    for dagster in ("dagster-webserver", "dagster-daemon", "control-metrics"):
        assert "Tn75" in processes[dagster].env["DAGSTER_POSTGRES_URL"]
