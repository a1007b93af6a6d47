"""Asking a running Prometheus through its HTTP API, as Grafana and operators do."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import requests

DASHBOARD = Path(__file__).resolve().parents[2] / "monitoring/grafana/dashboards/finpipe.json"


def api(base_url: str, path: str, **params: str) -> Any:
    response = requests.get(f"{base_url}/api/v1/{path}", params=params, timeout=30)
    body = response.json()
    assert body.get("status") == "success", body
    return body["data"]


def query(base_url: str, expr: str) -> list[dict[str, Any]]:
    """The instant vector of ``expr`` now (a scalar comes back as one sample)."""
    data = api(base_url, "query", query=expr)
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    return list(data["result"])


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one sample that is a number (a rate over no observation is NaN)."""
    return any(not math.isnan(float(sample["value"][1])) for sample in result)


def firing(base_url: str, alertname: str) -> list[dict[str, Any]]:
    return [
        alert
        for alert in api(base_url, "alerts")["alerts"]
        if alert["labels"].get("alertname") == alertname and alert["state"] == "firing"
    ]


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the Grafana dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        (panel["title"], target["expr"]) for panel in panels for target in panel.get("targets", [])
    ]
