"""``finpipe-spark`` unchanged on a Spark standalone cluster (one master, one worker).

The master and the worker come from pyspark's own distribution (``spark-class``), on
loopback and on free ports; the job only gets ``SPARK_MASTER=spark://...``. The lake is
then reconciled with Kafka's end offsets by (partition, offset): 0 lost, 0 duplicated.
Every process of the cluster, the job and its executors carries a marker in its
environment, so the test can prove that none is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from finpipe import lake
from finpipe.contracts import TradeRecord
from finpipe.settings import Settings, load_settings
from infra import services
from tests.spark.spark_job_harness import SparkJobEnv, dumps, encode, heartbeat_offsets

SPARK_CLASS = Path(sys.executable).with_name("spark-class")
MARKER_VAR = "FINPIPE_TEST_CLUSTER"
SYMBOLS = ["BINANCE:BTCUSDT", "AAPL", "MSFT", "BRK.B", "COINBASE:BTC-USD"]
FIRST_WAVE, SECOND_WAVE = 200, 100


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _processes_with(marker: str) -> list[str]:
    """``pid cmdline`` of every live process whose environment holds the marker."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name} {cmd[:160]}")
        except OSError:  # gone meanwhile, or a zombie
            continue
    return found


@dataclass
class StandaloneCluster:
    """A master and one worker (1 core, 1 GB), each in its own process group."""

    work_dir: Path
    marker: str
    port: int = field(default_factory=_free_port)
    master_ui_port: int = field(default_factory=_free_port)
    worker_ui_port: int = field(default_factory=_free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SPARK_LOCAL_IP": "127.0.0.1",
            # What executors' Python workers run: the venv's, with finpipe importable.
            "PYSPARK_PYTHON": sys.executable,
            MARKER_VAR: self.marker,
        }

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.work_dir / f"{name}.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                [str(SPARK_CLASS), *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def start(self, timeout: float = 120) -> None:
        self._spawn(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--webui-port", str(self.master_ui_port),
            ],
        )  # fmt: skip
        self._spawn(
            "worker",
            [
                "org.apache.spark.deploy.worker.Worker",
                self.url,
                "--host", "127.0.0.1",
                "--cores", "1",
                "--memory", "1g",
                "--webui-port", str(self.worker_ui_port),
                "--work-dir", str(self.work_dir / "work"),
            ],
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.processes:
                assert proc.poll() is None, f"exited {proc.returncode}:\n{self.log_tail()}"
            try:
                if [w["state"] for w in self.state().get("workers", [])] == ["ALIVE"]:
                    return
            except OSError:
                pass  # the master's UI is not up yet
            time.sleep(0.5)
        raise AssertionError(f"no live worker in {timeout}s:\n{self.log_tail()}")

    def state(self) -> dict[str, Any]:
        """The master's own view (its web UI's JSON): workers, active/completed apps."""
        url = f"http://127.0.0.1:{self.master_ui_port}/json/"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    def stop(self) -> None:
        """Worker first (it kills its executors), then the master; SIGKILL if stuck."""
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            for log in sorted(self.work_dir.glob("*.log"))
        )


@dataclass
class ClusterJobEnv(SparkJobEnv):
    """The job of ``SparkJobEnv`` with the cluster's master URL and marker."""

    cluster: StandaloneCluster | None = None

    @property
    def env(self) -> dict[str, str]:
        assert self.cluster is not None
        return {
            **super().env,
            "SPARK_MASTER": self.cluster.url,
            "SPARK_LOCAL_IP": "127.0.0.1",
            MARKER_VAR: self.cluster.marker,
        }


@pytest.fixture
def cluster_job(infrastructure: Settings, tmp_path: Path) -> Iterator[ClusterJobEnv]:
    name = f"it-cluster-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        KAFKA_TOPIC=name,
        LAKE_PREFIX=f"tests/{name}",
        SPARK_CHECKPOINT_DIR=tmp_path / "checkpoint",
        SPARK_TRIGGER_SECONDS=1.0,
        FINPIPE_HOME=tmp_path / "home",
    )
    services.ensure_topics(infrastructure, [name])
    for folder in ("logs", "cluster"):
        (tmp_path / folder).mkdir()
    cluster = StandaloneCluster(tmp_path / "cluster", marker=name)
    job = ClusterJobEnv(settings, tmp_path / "logs", cluster=cluster)
    try:
        cluster.start()
        yield job
    finally:
        for proc in job.processes:
            if proc.poll() is None:
                job.kill(proc)
        cluster.stop()
        # Anything still carrying the marker (an executor, a Python worker) is a leak.
        leftovers = _processes_with(name)
        for line in leftovers:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        assert not leftovers, f"processes left behind: {leftovers}"


def _trades(count: int, start: int) -> list[TradeRecord]:
    now = int(time.time() * 1000)
    return [
        TradeRecord(
            SYMBOLS[n % len(SYMBOLS)], 100.0 + n, float(1 + n % 7), now - n, None, now, "simulator"
        )
        for n in range(start, start + count)
    ]


def _produce(settings: Settings, records: list[TradeRecord]) -> dict[tuple[int, int], TradeRecord]:
    """Keyed by symbol, as the producer does; returns what Kafka acknowledged, by coords."""
    producer = Producer(
        {"bootstrap.servers": settings.kafka_server, "acks": "all", "enable.idempotence": True}
    )
    acked: dict[tuple[int, int], TradeRecord] = {}
    errors: list[str] = []

    for record in records:

        def on_delivery(err: Any, msg: Any, record: TradeRecord = record) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                acked[(msg.partition(), msg.offset())] = record

        producer.produce(
            settings.kafka_topic, key=record.symbol, value=encode(record), on_delivery=on_delivery
        )
    assert producer.flush(30) == 0 and not errors, errors
    return acked


def _kafka_end_offsets(settings: Settings) -> dict[str, int]:
    """The broker's high watermarks of the topic's non-empty partitions."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_server, "group.id": "unused"})
    try:
        topic = consumer.list_topics(settings.kafka_topic, timeout=10).topics[settings.kafka_topic]
        ends = {}
        for partition in topic.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(settings.kafka_topic, partition), timeout=10
            )
            assert low == 0, (partition, low)
            if high > 0:
                ends[str(partition)] = high
        return ends
    finally:
        consumer.close()


def test_the_stream_runs_unchanged_on_a_standalone_cluster(cluster_job: ClusterJobEnv) -> None:
    settings = cluster_job.settings
    cluster = cluster_job.cluster
    assert cluster is not None
    acked = _produce(settings, _trades(FIRST_WAVE, 0))

    started = time.monotonic()
    job = cluster_job.start()
    cluster_job.wait_health(job, lambda h: h.get("total_rows", 0) >= FIRST_WAVE, timeout=240)
    first_batch_s = time.monotonic() - started
    # The application is the master's, and its executor runs on the worker.
    apps = cluster.state()["activeapps"]
    assert [(a["name"], a["state"]) for a in apps] == [("finpipe-spark", "RUNNING")], apps
    executor_logs = list((cluster.work_dir / "work").glob("app-*/*/stderr"))
    assert executor_logs, f"no executor ran on the worker:\n{cluster.log_tail()}"
    # The connector jars reached it from the driver (``spark.jars`` with local paths).
    fetched = "".join(log.read_text(errors="replace") for log in executor_logs)
    assert "/jars/spark-sql-kafka" in fetched and "/jars/kafka-clients" in fetched

    # A second wave while the query runs, then wait until the job committed Kafka's end.
    acked |= _produce(settings, _trades(SECOND_WAVE, FIRST_WAVE))
    ends = _kafka_end_offsets(settings)
    assert sum(ends.values()) == FIRST_WAVE + SECOND_WAVE == len(acked), ends
    beat = cluster_job.wait_health(
        job, lambda h: heartbeat_offsets(h, settings.kafka_topic) == ends, timeout=120
    )
    assert beat["total_rows"] == len(acked) and beat["total_rejects"] == 0, dumps(beat)

    # Reconcile exactly: every Kafka coordinate once, with its own trade's values.
    rows = (
        lake.duckdb_with_lake(settings)
        .execute("SELECT kafka_partition, kafka_offset, symbol, price FROM processed_trades")
        .fetchall()
    )
    coords = [(p, o) for p, o, _, _ in rows]
    expected = {(int(p), o) for p, end in ends.items() for o in range(end)}
    lost, extra = expected - set(coords), len(coords) - len(set(coords))
    assert (len(lost), extra, set(coords) - expected) == (0, 0, set()), (lost, extra)
    assert set(acked) == expected
    for partition, offset, symbol, price in rows:
        record = acked[(partition, offset)]
        assert (symbol, price) == (record.symbol, record.price), (partition, offset)

    assert cluster_job.terminate(job) == 0, cluster_job.log_tail()
    final = cluster_job.health()
    assert final["final"] is True and final["status"] == "stopped", dumps(final)
    assert heartbeat_offsets(final, settings.kafka_topic) == ends
    completed = cluster.state()["completedapps"]
    assert [a["name"] for a in completed] == ["finpipe-spark"], completed
    print(
        f"standalone cluster: {len(rows)} rows reconciled over {len(ends)} partitions "
        f"(0 lost, 0 duplicated); first batch {first_batch_s:.1f}s after the job started; "
        f"{beat['batch_id'] + 1} batches"
    )


pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
