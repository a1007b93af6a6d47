"""Prometheus for the local platform: its configuration from the settings, its process.

The scrape jobs name finpipe's three endpoints (producer, Spark driver, control plane)
on loopback; the rules are ``monitoring/alert-rules.yml``, the same file an existing
Prometheus loads (README, "Metrics and alerts").
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import yaml

from finpipe.settings import Settings
from infra import artifacts
from infra.processes import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
RULES_FILE = REPO_ROOT / "monitoring" / "alert-rules.yml"
SCRAPE_JOBS = {
    "finpipe_producer": "producer_metrics_port",
    "finpipe_spark": "spark_metrics_port",
    "finpipe_control": "control_metrics_port",
}
"""Prometheus job name -> the setting of the port it scrapes."""


def metrics_endpoints(settings: Settings) -> dict[str, str]:
    """Scrape job -> the URL of its /metrics (enabled endpoints only)."""
    return {
        job: f"http://127.0.0.1:{getattr(settings, field)}/metrics"
        for job, field in SCRAPE_JOBS.items()
        if getattr(settings, field)
    }


def prometheus_config(settings: Settings) -> dict[str, object]:
    interval = f"{settings.prometheus_scrape_seconds:g}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": [url.split("/")[2]]}],
            }
            for job, url in metrics_endpoints(settings).items()
        ],
    }


def prometheus_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.prometheus_port}"


def _ready(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"{prometheus_url(settings)}/-/ready", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def prometheus_process(settings: Settings) -> ManagedProcess:
    """The process; its configuration is written by :func:`write_prometheus_config`."""
    root = settings.home / "prometheus"
    binary = artifacts.prometheus_artifact(settings.cache_dir).root / "prometheus"
    return ManagedProcess(
        name="prometheus",
        argv=[
            str(binary),
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
            "--storage.tsdb.retention.time=15d",
        ],
        home=settings.home,
        ports=[("127.0.0.1", settings.prometheus_port)],
        ready=lambda: _ready(settings),
        ready_timeout=60,
    )


def write_prometheus_config(settings: Settings) -> Path:
    path = settings.home / "prometheus" / "prometheus.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(prometheus_config(settings), sort_keys=False))
    return path
