"""A process's Prometheus endpoint: ``/metrics`` (text format) from a registry of its own.

Each stream and the control-plane exporter serve one, on ``METRICS_HOST`` (loopback in
local mode) and the port its setting names; port 0 turns it off. A port still held by
the previous process of the same stream (a supervisor replacing a stale run) is no reason
to stop capturing trades: the endpoint says so in the log and takes the port as soon as
it is free.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, start_http_server

log = structlog.get_logger("metrics")

RETRY_SECONDS = 5.0


class MetricsEndpoint:
    """Start with :meth:`start`, end with :meth:`close` (also as a context manager)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, setting: str) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.setting = setting
        self._server: WSGIServer | None = None
        self._closed = threading.Event()
        self._retry: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.port != 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    @property
    def serving(self) -> bool:
        return self._server is not None

    def start(self) -> MetricsEndpoint:
        if self.enabled and not self._bind():
            self._retry = threading.Thread(target=self._keep_trying, name="metrics-bind")
            self._retry.daemon = True
            self._retry.start()
        return self

    def _bind(self) -> bool:
        try:
            server, _thread = start_http_server(self.port, self.host, self.registry)
        except OSError as exc:
            log.warning(
                "metrics endpoint cannot listen yet; retrying",
                url=self.url,
                setting=self.setting,
                error=str(exc),
                retry_seconds=RETRY_SECONDS,
            )
            return False
        if self._closed.is_set():  # closed while binding
            server.shutdown()
            server.server_close()
            return True
        self._server = server
        log.info("metrics endpoint listening", url=self.url)
        return True

    def _keep_trying(self) -> None:
        while not self._closed.wait(RETRY_SECONDS):
            if self._bind():
                return

    def close(self) -> None:
        self._closed.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> MetricsEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
