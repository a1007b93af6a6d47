"""A real dagster-daemon starts both streams and restarts a killed producer."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from finpipe import health
from finpipe.settings import Settings
from finpipe_dagster.instance import STREAM_TAG, ensure_dagster_home
from infra import services

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def platform(
    infrastructure: Settings, tmp_path: Path
) -> Iterator[tuple[Settings, DagsterInstance]]:
    run = uuid.uuid4().hex[:8]
    settings = infrastructure.model_copy(
        update={
            "home": tmp_path / "home",
            "kafka_topic": f"e2e-dagster-{run}",
            "kafka_dlq_topic": f"e2e-dagster-{run}-dlq",
            "lake_prefix": f"e2e-dagster/{run}/processed_trades",
            "summaries_prefix": f"e2e-dagster/{run}/summaries",
            "simulator_port": free_port(),
        }
    )
    services.ensure_topics(settings)
    env = {
        **os.environ,
        "FINPIPE_HOME": str(settings.home),
        "DAGSTER_HOME": str(settings.home / "dagster"),
        "KAFKA_TOPIC": settings.kafka_topic,
        "KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
        "LAKE_PREFIX": settings.lake_prefix,
        "SUMMARIES_PREFIX": settings.summaries_prefix,
        "SIMULATOR_PORT": str(settings.simulator_port),
        "SPARK_TRIGGER_SECONDS": "5",
    }
    # settings.dagster_home follows DAGSTER_HOME: point it here first (restored below)
    os.environ["DAGSTER_HOME"] = str(settings.home / "dagster")
    dagster_home = ensure_dagster_home(settings)
    logs = tmp_path / "logs"
    logs.mkdir()
    simulator = subprocess.Popen(
        [str(BIN / "finpipe-simulator"), "--port", str(settings.simulator_port)],
        env=env,
        stdout=(logs / "simulator.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO,
        env={**env, "DAGSTER_HOME": str(dagster_home)},
        stdout=(logs / "daemon.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    instance = DagsterInstance.get()
    try:
        yield settings, instance
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(180)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()

        # Nothing launches streams any more: stop those still running (their run workers
        # then end by themselves), until none is left.
        def streams_stopped() -> bool:
            alive = False
            for stream in ("producer", "spark"):
                beat = health.read_health(settings, stream)
                if beat and pid_alive(int(beat["pid"])):
                    os.kill(int(beat["pid"]), signal.SIGTERM)
                    alive = True
            return not alive

        wait_for("the streams to stop", streams_stopped, 180)
        simulator.send_signal(signal.SIGTERM)
        simulator.wait(30)
        instance.dispose()
        os.environ["DAGSTER_HOME"] = str(infrastructure.home / "dagster")
        print((logs / "daemon.log").read_text()[-3000:])


def stream_runs(instance: DagsterInstance, stream: str) -> list[Any]:
    return list(instance.get_run_records(RunsFilter(tags={STREAM_TAG: stream})))


@pytest.mark.e2e
def test_daemon_starts_streams_and_restarts_a_killed_producer(
    platform: tuple[Settings, DagsterInstance],
) -> None:
    settings, instance = platform

    def heartbeat(stream: str, **fields: Any) -> dict | None:
        beat = health.read_health(settings, stream)
        if beat and all(beat.get(k) == v for k, v in fields.items()):
            return beat
        return None

    first = wait_for("a producer heartbeat", lambda: heartbeat("producer"), 240)
    wait_for("a committed Spark batch", lambda: heartbeat("spark", event="batch"), 420)
    assert [r.dagster_run.status for r in stream_runs(instance, "producer")] == [
        DagsterRunStatus.STARTED
    ]
    assert [r.dagster_run.status for r in stream_runs(instance, "spark")] == [
        DagsterRunStatus.STARTED
    ]

    os.kill(int(first["pid"]), signal.SIGKILL)  # the producer process dies
    replaced = wait_for(
        "a new producer process",
        lambda: (b := heartbeat("producer")) and b["pid"] != first["pid"] and b,
        240,
    )
    assert pid_alive(int(replaced["pid"]))
    statuses = sorted(r.dagster_run.status.value for r in stream_runs(instance, "producer"))
    assert statuses == ["FAILURE", "STARTED"], statuses
    print(json.dumps({"first_pid": first["pid"], "replacement_pid": replaced["pid"]}))
