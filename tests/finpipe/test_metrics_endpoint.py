from __future__ import annotations

import socket

import pytest
from prometheus_client import CollectorRegistry, Counter

from finpipe import metrics_endpoint
from finpipe.metrics_endpoint import MetricsEndpoint
from tests.support.metrics import scrape, value
from tests.support.network import free_port, listening_addresses
from tests.support.waiting import wait_for


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("finpipe_test_events", "events", registry=registry).inc(3)
    return registry


def test_serves_its_registry_on_loopback_and_stops_on_close() -> None:
    port = free_port()
    with MetricsEndpoint(_registry(), "127.0.0.1", port, "TEST_PORT") as endpoint:
        assert endpoint.serving and listening_addresses(port) == {"127.0.0.1"}
        assert value(scrape(endpoint.url), "finpipe_test_events_total") == 3
    assert not listening_addresses(port)


def test_port_zero_serves_nothing() -> None:
    with MetricsEndpoint(_registry(), "127.0.0.1", 0, "TEST_PORT") as endpoint:
        assert not endpoint.enabled and not endpoint.serving


def test_a_busy_port_is_taken_once_the_previous_owner_lets_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_endpoint, "RETRY_SECONDS", 0.1)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    with MetricsEndpoint(_registry(), "127.0.0.1", port, "TEST_PORT") as endpoint:
        assert not endpoint.serving
        holder.close()
        wait_for("the endpoint to take the port", lambda: endpoint.serving, 10, every=0.1)
        assert value(scrape(endpoint.url), "finpipe_test_events_total") == 3
