"""Helpers to run ``finpipe-spark`` as a real subprocess against the test Kafka and MinIO.

Each test gets its own topic, lake prefix, checkpoint and FINPIPE_HOME (so its own
health file), because the broker and the bucket are shared with other tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.fs as pafs
from confluent_kafka import Producer

from finpipe import contracts, health, lake
from finpipe.contracts import TradeRecord
from finpipe.settings import Settings

JOB_BIN = Path(sys.executable).with_name("finpipe-spark")


@dataclass
class SparkJobEnv:
    """One isolated deployment of the job: topic, lake prefix, checkpoint, home."""

    settings: Settings
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "FINPIPE_HOME": str(s.home),
            "KAFKA_TOPIC": s.kafka_topic,
            "LAKE_PREFIX": s.lake_prefix,
            "SPARK_CHECKPOINT_DIR": str(s.checkpoint_dir),
            "SPARK_TRIGGER_SECONDS": str(s.spark_trigger_seconds),
        }

    def start(self) -> subprocess.Popen[bytes]:
        """A new job process, in its own process group (so a kill takes its JVM too)."""
        log = (self.log_dir / f"spark-{len(self.processes)}.log").open("wb")
        proc = subprocess.Popen(
            [str(JOB_BIN)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """Like a power cut: SIGKILL the job, its JVM and its Python workers at once."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def terminate(self, proc: subprocess.Popen[bytes], timeout: float = 90) -> int:
        """What a supervisor does: SIGTERM to the job's own process only."""
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def health(self) -> dict[str, Any]:
        return health.read_health(self.settings, "spark") or {}

    def wait_health(
        self,
        proc: subprocess.Popen[bytes],
        ready: Callable[[dict[str, Any]], bool],
        timeout: float = 180,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.health()
            if current.get("pid") == proc.pid and ready(current):
                return current
            assert proc.poll() is None, (
                f"finpipe-spark exited with {proc.returncode}:\n{self.log_tail()}"
            )
            time.sleep(0.2)
        raise AssertionError(
            f"no such heartbeat in {timeout}s; last: {self.health()}\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted(self.log_dir.glob("spark-*.log"))
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else ""

    def committed_batches(self) -> set[int]:
        return _batch_ids(self.settings.checkpoint_dir / "commits")

    def planned_batches(self) -> set[int]:
        return _batch_ids(self.settings.checkpoint_dir / "offsets")

    def lake_committed_batch(self) -> int:
        """The newest batch the trades table committed (-1: none, or no table yet)."""
        table = lake.trades_table(self.settings).open()
        done = table.transaction_version(contracts.SPARK_APP_ID) if table else None
        return -1 if done is None else done

    def uncommitted_files(self) -> set[str]:
        """Data files in the trades table's folder that its log does not name: a batch
        written by the executors and not (yet) committed, or a replay's leftovers."""
        table = lake.trades_table(self.settings)
        snapshot = table.open()
        if snapshot is None:
            return set()
        named = {urllib.parse.unquote(p) for p in snapshot.file_uris()}
        fs = lake.s3_filesystem(self.settings)
        root = f"{self.settings.s3_bucket}/{table.key_prefix}"
        found = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        return {
            f"s3://{info.path}"
            for info in found
            if info.type == pafs.FileType.File
            and info.path.endswith(".parquet")
            and "/_delta_log/" not in info.path
        } - named

    def lake_rows(self) -> list[tuple[Any, ...]]:
        con = lake.duckdb_with_lake(self.settings)
        return con.execute(
            "SELECT kafka_partition, kafka_offset FROM processed_trades ORDER BY ALL"
        ).fetchall()


def _batch_ids(folder: Path) -> set[int]:
    if not folder.exists():
        return set()
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()}


def encode(record: TradeRecord) -> bytes:
    return msgspec.json.encode(record)


class TradeFeed:
    """Produces trades from a thread; the delivery reports are the truth of what Kafka has."""

    def __init__(self, settings: Settings, symbols: list[str], per_tick: int = 20) -> None:
        self.settings = settings
        self.symbols = symbols
        self.per_tick = per_tick
        self.delivered: set[tuple[int, int]] = set()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trade-feed", daemon=True)
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka_server,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 20,
            }
        )

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failures.append(str(err))
        else:
            self.delivered.add((msg.partition(), msg.offset()))

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            now = int(time.time() * 1000)
            for _ in range(self.per_tick):
                symbol = self.symbols[n % len(self.symbols)]
                record = TradeRecord(symbol, 100 + n % 7, float(n % 5), now, None, now, "simulator")
                self._producer.produce(
                    self.settings.kafka_topic,
                    key=symbol,
                    value=encode(record),
                    on_delivery=self._on_delivery,
                )
                n += 1
            self._producer.poll(0)
            self._stop.wait(0.1)

    def __enter__(self) -> TradeFeed:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(10)
            assert self._producer.flush(30) == 0

    def end_offsets(self) -> dict[str, int]:
        return end_offsets(self.delivered)


def produce(job: SparkJobEnv, values: list[tuple[str, bytes]]) -> list[tuple[int, int]]:
    """Produce in order; returns each record's (partition, offset)."""
    producer = Producer({"bootstrap.servers": job.settings.kafka_server, "acks": "all"})
    coords: dict[int, tuple[int, int]] = {}
    for i, (key, value) in enumerate(values):

        def on_delivery(err: Any, msg: Any, i: int = i) -> None:
            assert err is None, err
            coords[i] = (msg.partition(), msg.offset())

        producer.produce(job.settings.kafka_topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    return [coords[i] for i in range(len(values))]


def heartbeat_offsets(beat: dict[str, Any], topic: str) -> dict[str, int]:
    """Committed end offsets of the topic's non-empty partitions."""
    offsets = (beat.get("end_offsets") or {}).get(topic, {})
    return {str(p): int(o) for p, o in offsets.items() if int(o) > 0}


def end_offsets(coords: Iterable[tuple[int, int]]) -> dict[str, int]:
    """Kafka end offsets (last offset + 1) of the partitions these records went to."""
    ends: dict[str, int] = {}
    for partition, offset in coords:
        ends[str(partition)] = max(ends.get(str(partition), 0), offset + 1)
    return ends


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, indent=1)


def foreign_records(now_ms: int) -> dict[str, bytes]:
    """Records finpipe's producer never writes but anyone can put on the topic, by kind.

    Each is invalid under the contract's rule; the Spark job must keep each as a reject
    (with a reason) and keep running.
    """

    def record(**fields: Any) -> bytes:
        base: dict[str, Any] = {
            "symbol": "AAPL",
            "price": 190.0,
            "volume": 1.0,
            "trade_ts_ms": now_ms,
            "conditions": None,
            "ingest_ts_ms": now_ms,
            "source": "simulator",
        }
        return json.dumps({**base, **fields}).encode()

    return {
        "not JSON": b"this is not JSON {",
        "timestamp in microseconds": record(trade_ts_ms=now_ms * 1000),
        "timestamp in nanoseconds": record(trade_ts_ms=now_ms * 1_000_000),
        "negative price": record(price=-190.0),
        "negative volume": record(volume=-1.0),
        "integer above int64": record(trade_ts_ms=2**63 + 5),
        "only symbol": b'{"symbol": "AAPL"}',
        "empty symbol": record(symbol=""),
        # and a few more
        "timestamp in seconds": record(trade_ts_ms=now_ms // 1000),
        "ingest time in nanoseconds": record(ingest_ts_ms=now_ms * 1_000_000),
        "zero price": record(price=0),
        "price x volume overflows": record(price=1e300, volume=1e300),
        "symbol with a newline": record(symbol="AA\nPL"),
        "symbol too long": record(symbol="X" * 65),
        "JSON array": b"[1, 2, 3]",
        "JSON null": b"null",
        "price as a string": record(price="190.0"),
        "unknown source": record(source="bloomberg"),
        "not UTF-8": b"\xff\xfe\x00garbage",
    }
