"""Session-wide test set-up.

Tests run against their own instances of the services, on their own ports and under
their own FINPIPE_HOME, so they never touch a platform started with `make up`. Each
service starts once per session (or is reused when a previous session kept it up with
FINPIPE_KEEP_SERVICES=1) and is stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Every pytest process gets a slot of its own: its ports move by slot*100 and it has a home
# of its own, so its broker and object store are its own too (a drill that stops one
# disturbs no other process). FINPIPE_TEST_SLOT=N (default 0) gives a checkout the slots
# N*10 .. N*10+9, so several checkouts can run their suites on one machine at the same
# time; within a checkout, pytest-xdist's worker gwK takes the checkout's K-th slot.
WORKERS_PER_CHECKOUT = 10


def _slot() -> int:
    checkout = int(os.environ.get("FINPIPE_TEST_SLOT", "0") or 0)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return checkout * WORKERS_PER_CHECKOUT + int(worker.removeprefix("gw"))


SLOT = _slot()
_OFFSET = SLOT * 100
TEST_HOME = Path(tempfile.gettempdir()) / (
    f"finpipe-test-{os.getuid()}" + (f"-slot{SLOT}" if SLOT else "")
)
TEST_ENV = {
    "FINPIPE_HOME": str(TEST_HOME),
    "FINPIPE_ENV_FILE": "",
    "KAFKA_SERVER": f"localhost:{19092 + _OFFSET}",
    "S3_ENDPOINT_URL": f"http://127.0.0.1:{19000 + _OFFSET}",
    "MINIO_CONSOLE_PORT": str(19001 + _OFFSET),
    "SIMULATOR_PORT": str(18765 + _OFFSET),
    "DAGSTER_PORT": str(13000 + _OFFSET),
    "STREAMLIT_PORT": str(18501 + _OFFSET),
    "SPARK_UI_PORT": str(14040 + _OFFSET),
    "PRODUCER_METRICS_PORT": str(19461 + _OFFSET),
    "SPARK_METRICS_PORT": str(19462 + _OFFSET),
    "CONTROL_METRICS_PORT": str(19463 + _OFFSET),
    "PROMETHEUS_PORT": str(19090 + _OFFSET),
    "PROMETHEUS_ENABLED": "false",
    "FINNHUB_API_TOKEN": "",
    "S3_ACCESS_KEY": "",
    "S3_SECRET_KEY": "",
    "DAGSTER_HOME": str(TEST_HOME / "dagster"),
}
# Set at import time so that every subprocess a test starts sees the same settings.
os.environ.update(TEST_ENV)


def _make_interruptible() -> None:
    """Undo an ignored SIGINT (and SIGTERM) that this process inherited.

    A process started in the background by a non-interactive shell (a script or CI running
    `make test`) starts with SIGINT ignored. Dagster copies SIGINT's disposition onto
    SIGTERM each time it enters or leaves an interrupt boundary on the main thread (a
    sensor tick, ``execute_in_process``), so SIGTERM ends up ignored as well, and so it is
    in every process started afterwards. Among those are the ``tail -F`` mirrors of each
    run's compute logs: they outlive the SIGTERM that ends them, the run waits 30 s for
    each of the two, gives up and leaks them, so every run a test executes in a thread
    ends a minute after its step.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


_make_interruptible()

from finpipe.settings import Settings, load_settings  # noqa: E402
from infra.artifacts import spark_jars_folder  # noqa: E402

if not os.environ.get("SPARK_JARS"):  # what `make up` sets for the platform's Spark
    os.environ["SPARK_JARS"] = str(spark_jars_folder(load_settings().cache_dir))

STAGE_BY_MARKER = {"drill": 3, "e2e": 2, "integration": 1}
# Fixtures that start a real service (Kafka and MinIO; a PostgreSQL server).
SERVICE_FIXTURES = {"infrastructure", "postgres"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that use a real service. Alone, run unit tests first and drills last;
    spread over workers (``make test``), the slowest stages first, so that the longest
    drills overlap from the start instead of one finishing alone at the end."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)

    def stage(item: pytest.Item) -> int:
        return max((v for k, v in STAGE_BY_MARKER.items() if item.get_closest_marker(k)), default=0)

    items.sort(key=stage, reverse=bool(os.environ.get("PYTEST_XDIST_WORKER")))


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def infrastructure(settings: Settings) -> Iterator[Settings]:
    """Kafka and MinIO, real, on the test ports."""
    from infra import services

    processes = services.infrastructure_processes(settings)
    running_before = {p.name for p in processes if p.pid() is not None}
    if not running_before:
        # A fresh broker and bucket: nothing may refer to the old ones (Spark checkpoints
        # hold Kafka offsets, Dagster's history holds runs and heartbeats).
        shutil.rmtree(settings.home, ignore_errors=True)
    services.start_infrastructure(settings)
    yield settings
    if os.environ.get("FINPIPE_KEEP_SERVICES") != "1":
        for proc in reversed(processes):
            if proc.name not in running_before:
                proc.stop()


@pytest.fixture
def broker(infrastructure: Settings) -> Iterator[Any]:
    """The test broker, to stop and start; always running again after the test."""
    from infra import services

    kafka = services.kafka_process(infrastructure)
    yield kafka
    if kafka.pid() is None:
        services.prepare_kafka(infrastructure)
        kafka.start()
