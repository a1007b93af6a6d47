"""Fixtures of the producer tests: a simulator on a free port, producers in threads,
fresh topics per test, and a consumer that reads a topic back to its end."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from finpipe.settings import Settings
from producer.app import TradeProducer
from producer.simulator.server import SimulatorConfig, SimulatorServer
from producer.topics import ensure_topics
from tests.support import kafka

SYMBOLS = ("BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "AAPL", "MSFT")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class RunningProducer:
    def __init__(self, producer: TradeProducer) -> None:
        self.producer = producer
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="producer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.exit_code = self.producer.run()
        except BaseException as exc:
            self.error = exc

    @property
    def counters(self):  # type: ignore[no-untyped-def]
        return self.producer.counters

    def stop(self) -> int | None:
        self.producer.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the producer did not stop"
        if self.error is not None:
            raise self.error
        return self.exit_code


def read_topic(settings: Settings, topic: str) -> list[tuple[str | None, dict[str, Any]]]:
    """Every message of a topic, read to the end of each partition (high watermark)."""
    return kafka.read_topic(settings, topic)


@pytest.fixture
def topics_settings(infrastructure: Settings) -> Settings:
    """Settings with a fresh trades and DLQ topic (created) and the test's tickers."""
    updated = infrastructure.model_copy(
        update={
            "kafka_topic": unique("it-trades"),
            "kafka_dlq_topic": unique("it-dlq"),
            "finnhub_tickers": SYMBOLS,
            # Each test its own receive log: a backlog of one test never reaches another.
            "producer_log_dir": infrastructure.home / "producer-logs" / unique("log"),
        }
    )
    ensure_topics(updated, [updated.kafka_topic, updated.kafka_dlq_topic])
    return updated


@pytest.fixture
def start_simulator() -> Iterator[Callable[..., SimulatorServer]]:
    servers: list[SimulatorServer] = []

    def start(**options: Any) -> SimulatorServer:
        options.setdefault("port", 0)
        options.setdefault("seed", 42)
        server = SimulatorServer(SimulatorConfig(**options)).start_in_thread()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def run_producer() -> Iterator[Callable[..., RunningProducer]]:
    running: list[RunningProducer] = []

    def start(settings: Settings, **kwargs: Any) -> RunningProducer:
        handle = RunningProducer(TradeProducer(settings, **kwargs))
        running.append(handle)
        return handle

    yield start
    for handle in running:
        if handle.thread.is_alive():
            handle.producer.stop()
            handle.thread.join(60)


@pytest.fixture
def topic_reader() -> Callable[[Settings, str], list[tuple[str | None, dict[str, Any]]]]:
    return read_topic
