"""Drills of the receive log with a real `finpipe-producer` process, the real test broker
and a simulator over a real socket: the broker stopped past the delivery timeout,
SIGKILLs during a fast feed, SIGTERM during an outage, a start with the broker down.

Each drill reconciles by source sequence: every item the log recorded (each trade and
dead letter of each logged frame, worked out again from the log's bytes) is in Kafka
exactly once, found by each record's ``log_position``, and the dead-letter topic holds only
what failed validation. The delivery timeout is shortened through its setting; the
default behaves the same, only slower.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from finpipe.contracts import parse_log_position
from finpipe.settings import Settings, load_settings
from infra import services
from producer.delivery import BROKERS_DOWN, Delivery
from producer.journal import IDENTITY_FILE, list_segments
from producer.simulator.server import SimulatorServer
from tests.spark.spark_job_harness import SparkJobEnv
from tests.support.kafka import expected_items, kafka_end_offsets
from tests.support.waiting import wait_for

PRODUCER = str(Path(sys.executable).parent / "finpipe-producer")
DELIVERY_TIMEOUT_SECONDS = 5

# Minutes long: scheduled with the other drills, first, so no worker ends the suite alone.
pytestmark = pytest.mark.drill


class ProducerProcess:
    def __init__(self, settings: Settings, home: Path, sim: SimulatorServer) -> None:
        self.home = home
        self.env = os.environ | {
            "FINPIPE_HOME": str(home),
            "KAFKA_TOPIC": settings.kafka_topic,
            "KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
            "FINNHUB_TICKERS": ",".join(settings.finnhub_tickers),
            "SIMULATOR_PORT": str(sim.port),
            "KAFKA_DELIVERY_TIMEOUT_SECONDS": str(DELIVERY_TIMEOUT_SECONDS),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.home / f"producer-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(PRODUCER, env=self.env, stdout=log, stderr=log)

    def signal(self, sig: int, timeout: float = 30) -> tuple[int, float]:
        """(exit code, seconds it took to exit)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def health(self) -> dict[str, Any]:
        try:
            return json.loads((self.home / "state" / "producer_health.json").read_text())
        except (OSError, ValueError):
            return {}

    def rss_mb(self) -> float:
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        return kb / 1024

    @property
    def log_dir(self) -> Path:
        return self.home / "producer-log"

    def logs(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.home.glob("producer-*.log"))
        )

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def producer_process(
    topics_settings: Settings, tmp_path: Path
) -> Iterator[Callable[[SimulatorServer], ProducerProcess]]:
    made: list[ProducerProcess] = []

    def make(sim: SimulatorServer) -> ProducerProcess:
        made.append(ProducerProcess(topics_settings, tmp_path, sim))
        return made[-1]

    yield make
    for process in made:
        process.kill_if_running()


def _start_broker(settings: Settings, kafka: Any) -> None:
    services.prepare_kafka(settings)
    kafka.start()


def _reconcile(
    settings: Settings,
    log_dir: Path,
    topic_reader: Callable[..., list[Any]],
    reclaimed_below: int = 0,
) -> dict[str, int]:
    """Kafka against the log, exactly. ``reclaimed_below``: segments before this sequence
    were deleted (acknowledged, reclaimed at capacity); their items are only checked for
    being there exactly once, with every sequence present (a feed without pings)."""
    expected, expected_letters = expected_items(log_dir, settings, "simulator")
    log_id = (log_dir / IDENTITY_FILE).read_text().strip()
    positions = {
        topic: [parse_log_position(v["log_position"]) for _, v in topic_reader(settings, topic)]
        for topic in (settings.kafka_topic, settings.kafka_dlq_topic)
    }
    assert {p.log_id for found in positions.values() for p in found} == {log_id}
    trades = [(p.seq, p.item) for p in positions[settings.kafka_topic]]
    letters = [(p.seq, p.item) for p in positions[settings.kafka_dlq_topic]]
    counted = collections.Counter(trades + letters)
    if reclaimed_below:
        reclaimed = {key for key in counted if key[0] < reclaimed_below}
        assert {seq for seq, _ in reclaimed} == set(range(reclaimed_below))
        expected |= reclaimed
    duplicated = sum(n - 1 for n in counted.values() if n > 1)
    missing = expected - set(counted)
    unexpected = set(counted) - expected
    print(
        f"reconciled by source sequence: {len(expected)} logged items, {len(trades)} trades "
        f"+ {len(letters)} dead letters in Kafka, {len(missing)} missing, {duplicated} duplicated"
    )
    assert duplicated == 0 and not missing and not unexpected
    assert set(letters) == expected_letters  # the DLQ holds what failed validation, only that
    return {"items": len(expected), "trades": len(trades), "letters": len(letters)}


def _drained(process: ProducerProcess) -> Callable[[], bool]:
    """A condition: every record the log held at this call's heartbeat is acknowledged by
    Kafka, and the delivery is connected. By sequence, not by the age of the oldest
    record: a live feed always has a frame or two in flight."""
    beat = wait_for("a heartbeat", process.health, 30)
    logged = beat["acked_seq"] + beat["backlog_records"]

    def delivered() -> bool:
        now = process.health()
        return now.get("kafka_state") == "connected" and now.get("acked_seq", -1) >= logged

    return delivered


def test_a_broker_outage_past_the_delivery_timeout_loses_and_doubles_nothing(
    topics_settings: Settings,
    infrastructure: Settings,
    broker: Any,
    start_simulator: Callable[..., SimulatorServer],
    producer_process: Callable[[SimulatorServer], ProducerProcess],
    topic_reader: Callable[..., list[Any]],
) -> None:
    # 4 symbols x 500 trades/s: about 2,000 trades/s.
    sim = start_simulator(trades_per_second=500, tick_seconds=0.05, burst_probability=0.0)
    process = producer_process(sim)
    process.start()
    wait_for("first deliveries", lambda: process.health().get("delivered", 0) > 2000, 60)
    sim.inject("garbage", symbol="AAPL")
    broker.stop()
    outage_started = time.monotonic()
    peak_rss, during = 0.0, []
    while time.monotonic() - outage_started < 4 * DELIVERY_TIMEOUT_SECONDS:
        peak_rss = max(peak_rss, process.rss_mb())
        during.append(process.health())
        time.sleep(1)
    sim.inject("garbage", symbol="MSFT")  # malformed input during the outage, too
    assert process.proc is not None and process.proc.poll() is None, "the producer died"
    beat = process.health()
    assert beat["backlog_records"] > 200 and beat["oldest_undelivered_age_s"] > 10
    assert beat["kafka_state"] != "connected" or beat["delivery_errors"] > 0
    _start_broker(infrastructure, broker)
    wait_for("the backlog delivered", _drained(process), 120)
    code, _ = process.signal(signal.SIGTERM)
    final = process.health()
    assert final["backlog_records"] == 0, final
    print(
        f"outage {4 * DELIVERY_TIMEOUT_SECONDS}s at ~2,000 trades/s; peak backlog "
        f"{max(b.get('backlog_records', 0) for b in during)} records; "
        f"peak RSS {peak_rss:.0f} MB; "
        f"delivery errors (resent) {final['delivery_errors']}; "
        f"sessions {final['delivery_sessions']}"
    )
    assert code == 0 and final["final"] is True and final["balanced"] is True
    assert final["delivery_errors"] > 0  # the timeout did expire during the outage
    assert peak_rss < 400
    counts = _reconcile(topics_settings, process.log_dir, topic_reader)
    assert counts["letters"] == 12  # the two garbage bursts: 6 dead letters each


def test_three_sigkills_during_a_fast_feed_leave_every_logged_trade_once_in_the_lake(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    producer_process: Callable[[SimulatorServer], ProducerProcess],
    topic_reader: Callable[..., list[Any]],
    tmp_path: Path,
) -> None:
    sim = start_simulator(trades_per_second=500, tick_seconds=0.05, burst_probability=0.0)
    process = producer_process(sim)
    rng = random.Random(11)
    process.start()
    wait_for("first deliveries", lambda: process.health().get("delivered", 0) > 1000, 60)
    for _ in range(3):
        time.sleep(rng.uniform(2.0, 6.0))
        process.signal(signal.SIGKILL)
        process.start()
        pid = process.proc.pid  # type: ignore[union-attr]
        wait_for("the restarted producer", lambda p=pid: process.health().get("pid") == p, 60)
    time.sleep(3)
    wait_for("the backlog delivered", _drained(process), 120)
    code, _ = process.signal(signal.SIGTERM)
    assert code == 0
    counts = _reconcile(topics_settings, process.log_dir, topic_reader)
    logged_trades = counts["trades"]
    lost_on_the_wire = sim.stats.trades_sent - logged_trades
    logs = [json.loads(line) for line in process.logs().splitlines() if line.startswith("{")]
    found_on_restart = [e["already_in_kafka"] for e in logs if "already_in_kafka" in e]
    torn = sum(e["bytes"] for e in logs if "torn record" in e.get("event", ""))
    print(
        f"3 SIGKILLs: {sim.stats.trades_sent} trades sent by the simulator, {logged_trades} "
        f"logged and in Kafka exactly once; {lost_on_the_wire} were sent to a killed "
        "process's socket and never received (a frame is logged as soon as it is read); "
        f"items found already in Kafka at each start (not resent): {found_on_restart}; "
        f"torn log bytes truncated at restarts: {torn}"
    )
    assert len(found_on_restart) == 4  # every start scanned Kafka before sending

    # And on into the lake: the real Spark job over the drill's topic. Every Kafka record
    # of it is a logged trade exactly once (above), so the lake holds every logged trade
    # exactly once when it holds each Kafka coordinate once, per partition up to its end.
    ends = {p: n for p, n in kafka_end_offsets(topics_settings).items() if n}
    assert sum(ends.values()) == logged_trades
    spark = SparkJobEnv(
        load_settings(
            KAFKA_TOPIC=topics_settings.kafka_topic,
            LAKE_PREFIX=f"tests/{topics_settings.kafka_topic}",
            SPARK_CHECKPOINT_DIR=tmp_path / "checkpoint",
            SPARK_TRIGGER_SECONDS=1.0,
            FINPIPE_HOME=tmp_path / "spark-home",
        ),
        tmp_path,
    )
    job = spark.start()
    try:
        spark.wait_health(job, lambda h: h.get("total_rows", 0) >= logged_trades, timeout=600)
        rows = spark.lake_rows()
    finally:
        spark.terminate(job)
    per_partition = collections.Counter(p for p, _ in rows)
    assert len(rows) == len(set(rows)) == logged_trades
    assert dict(per_partition) == ends
    assert set(rows) == {(p, o) for p, n in ends.items() for o in range(n)}
    print(f"lake: {len(rows)} rows, each Kafka coordinate once: every logged trade once")


def test_sigterm_during_an_outage_then_a_start_with_the_broker_down_loses_nothing(
    topics_settings: Settings,
    infrastructure: Settings,
    broker: Any,
    start_simulator: Callable[..., SimulatorServer],
    producer_process: Callable[[SimulatorServer], ProducerProcess],
    topic_reader: Callable[..., list[Any]],
) -> None:
    sim = start_simulator(trades_per_second=100, tick_seconds=0.1, burst_probability=0.0)
    process = producer_process(sim)
    process.start()
    wait_for("first deliveries", lambda: process.health().get("delivered", 0) > 200, 60)
    broker.stop()
    time.sleep(DELIVERY_TIMEOUT_SECONDS + 3)
    code, took = process.signal(signal.SIGTERM)
    stopped = process.health()
    print(
        f"SIGTERM during the outage: exit {code} after {took:.1f}s, "
        f"backlog {stopped['backlog_records']}"
    )
    assert code == 0 and took < 10
    assert stopped["backlog_records"] > 0 and stopped["final"] is True

    # Started while the broker is still down, for 2 minutes (past every Kafka client and
    # admin timeout of a start): it runs, receives, spools.
    process.start()
    down_until = time.monotonic() + 120
    while time.monotonic() < down_until:
        assert process.proc is not None and process.proc.poll() is None, process.logs()[-3000:]
        time.sleep(1)
    beat = process.health()
    assert beat["kafka_state"].startswith("unreachable") and beat["frames"] > 0
    assert beat["backlog_records"] > stopped["backlog_records"]

    _start_broker(infrastructure, broker)
    wait_for("the backlog delivered", _drained(process), 120)
    code, _ = process.signal(signal.SIGTERM)
    assert code == 0
    _reconcile(topics_settings, process.log_dir, topic_reader)


def test_a_full_log_pauses_reading_says_why_and_resumes_without_a_loss(
    topics_settings: Settings,
    infrastructure: Settings,
    broker: Any,
    start_simulator: Callable[..., SimulatorServer],
    producer_process: Callable[[SimulatorServer], ProducerProcess],
    topic_reader: Callable[..., list[Any]],
) -> None:
    sim = start_simulator(
        trades_per_second=250, tick_seconds=0.05, burst_probability=0.0, ping_seconds=3600
    )
    process = producer_process(sim)
    # Small, but with room for the one large frame the simulator sends after a pause (it
    # catches up on the time it could not send in a single frame).
    process.env |= {"PRODUCER_LOG_MAX_MB": "4", "PRODUCER_LOG_SEGMENT_MB": "1"}
    process.start()
    wait_for("first deliveries", lambda: process.health().get("delivered", 0) > 1000, 60)
    broker.stop()
    paused = wait_for(
        "reading paused at capacity",
        lambda: (b := process.health()).get("log_state", "").startswith("reading paused") and b,
        180,
    )
    assert "PRODUCER_LOG_MAX_MB" in paused["log_state"]
    assert paused["log_bytes"] <= 4_000_000
    frames = paused["frames"]
    time.sleep(6)  # a heartbeat later: still paused, nothing read meanwhile
    assert process.health()["frames"] == frames
    _start_broker(infrastructure, broker)
    wait_for("reading resumed", lambda: process.health().get("frames", 0) > frames + 100, 120)
    # The feed goes quiet, so that no stop can land while the small log is full again.
    sim.inject("stall", seconds=300)
    drained = _drained(process)
    wait_for(
        "the backlog delivered and the log taking frames",
        lambda: drained() and process.health().get("log_state") == "ok",
        120,
    )
    code, _ = process.signal(signal.SIGTERM)
    final = process.health()
    assert code == 0 and final["frames_not_logged"] == 0 and final["backlog_records"] == 0
    print(f"log full at {paused['log_bytes']} bytes after {frames} frames; resumed, drained")
    oldest_kept = list_segments(process.log_dir)[0].first_seq
    counts = _reconcile(topics_settings, process.log_dir, topic_reader, reclaimed_below=oldest_kept)
    assert counts["trades"] == final["delivered"] == final["received"]


def test_the_heartbeat_says_all_brokers_are_down_before_any_delivery_timeout(
    topics_settings: Settings,
    infrastructure: Settings,
    broker: Any,
    start_simulator: Callable[..., SimulatorServer],
    run_producer: Callable[..., Any],
) -> None:
    """With the delivery timeout at its default (300 s), the broker's loss shows in the
    producer's state as soon as librdkafka loses every broker, and deliveries clear it."""
    sim = start_simulator(trades_per_second=20, tick_seconds=0.1)
    settings = topics_settings.model_copy(update={"simulator_port": sim.port})
    running = run_producer(settings)
    wait_for("first deliveries", lambda: running.producer.health().get("delivered", 0) > 0, 60)
    assert running.producer.health()["kafka_state"] == "connected"
    broker.stop()
    down = wait_for(
        "the state to say so",
        lambda: (h := running.producer.health())["kafka_state"] == BROKERS_DOWN and h,
        60,
    )
    assert down["backlog_records"] > 0
    _start_broker(infrastructure, broker)
    wait_for(
        "deliveries again", lambda: running.producer.health()["kafka_state"] == "connected", 120
    )
    wait_for(
        "the backlog delivered", lambda: running.producer.health()["backlog_records"] == 0, 120
    )
    assert running.stop() == 0


def test_a_client_that_forgot_every_broker_is_replaced_and_nothing_is_lost(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    run_producer: Callable[..., Any],
    topic_reader: Callable[..., list[Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka forgets every broker when a lone broker's last Metadata answer, in the
    milliseconds of its shutdown, lists none (see ``Delivery._on_stats``): it then never
    connects again. That race cannot be forced, so the client's own statistics reach the
    delivery stripped of their brokers, as they read after it: the client is replaced,
    delivery resumes after a scan of Kafka, and Kafka holds every logged item once."""
    sim = start_simulator(trades_per_second=20, tick_seconds=0.1)
    settings = topics_settings.model_copy(update={"simulator_port": sim.port})
    running = run_producer(settings)
    delivery = running.producer.delivery
    wait_for("first deliveries", lambda: running.producer.health().get("delivered", 0) > 0, 60)
    sessions = running.producer.health()["delivery_sessions"]

    def forgot_every_broker(stats_json: str) -> None:
        stats = json.loads(stats_json)
        stats["brokers"] = {}
        Delivery._on_stats(delivery, json.dumps(stats))

    monkeypatch.setattr(delivery, "_on_stats", forgot_every_broker)
    wait_for(
        "the client replaced",
        lambda: running.producer.health()["kafka_client_replacements"] == 1,
        60,
    )
    monkeypatch.undo()  # the new client's statistics are its own again
    wait_for(
        "a new session, connected",
        lambda: (
            (h := running.producer.health())["delivery_sessions"] > sessions
            and h["kafka_state"] == "connected"
        ),
        60,
    )
    delivered = running.producer.health()["delivered"]
    wait_for(
        "deliveries by the new client",
        lambda: running.producer.health()["delivered"] > delivered,
        60,
    )
    assert running.stop() == 0
    health = running.producer.health()
    assert health["kafka_client_replacements"] == 1 and health["backlog_records"] == 0
    counts = _reconcile(settings, running.producer.journal.directory, topic_reader)
    assert counts["items"] > 0
