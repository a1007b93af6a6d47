"""The broker-loss drill on a three-broker KRaft cluster: mid-replay, the broker that
leads the most partitions of the trades topic is SIGKILLed, and restarted later.

The module starts its own cluster on loopback with the code `make up` runs
(``KAFKA_SERVER`` of three loopback addresses), creates the topics with finpipe's default
replication (3 replicas, ``min.insync.replicas`` 2), and runs the real streams on it:
the simulator replaying a corpus the test writes (``tests/support/replay_corpus.py``),
``finpipe-producer`` and ``finpipe-spark`` as processes of their own, with the lake on the
test MinIO. Nothing supervises them: the drill shows that neither needs restarting when a
broker of a replicated cluster dies (the supervisors' part is the outage drill's). Then:

1. the lake equals the replayed trades (0 missing, 0 doubled), and its Kafka
   coordinates equal the topic's (every offset once);
2. the trades topic holds every trade the receive log recorded exactly once, by source
   sequence, and the dead-letter topic only the corpus's malformed frames;
3. the producer and the Spark job ran as one process each from start to end;
4. deliveries and lake commits resumed on every partition after the kill (times printed),
   and the restarted broker rejoined every partition's in-sync replicas.

Every client timeout is at its default: a leader moving is routine for Kafka's clients,
so nothing here is shortened except the replay's length and the time the broker stays
down (``BROKER_DOWN_SECONDS``: restarting it minutes later would cost only wall time).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from finpipe import lake
from finpipe.settings import Settings, load_settings
from infra import services
from infra import stack as infra_stack
from infra.processes import ManagedProcess, pid_alive, stop_together, tail
from tests.spark.spark_job_harness import heartbeat_offsets
from tests.support.kafka import expected_items, kafka_end_offsets, read_topic, source_position
from tests.support.network import free_port
from tests.support.platform import beat
from tests.support.replay_corpus import SYMBOLS, Corpus, reconcile_lake, write_corpus
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.drill, pytest.mark.timeout(900)]

REPLAY_SECONDS = 150.0
BROKER_DOWN_SECONDS = 45.0
BROKERS = 3
BIN = Path(sys.executable).parent


@dataclass
class ClusterDrill:
    settings: Settings
    corpus: Corpus
    streams: dict[str, ManagedProcess]
    victim: int = 0
    marks: dict[str, float] = field(default_factory=dict)
    pids: dict[str, set[int]] = field(default_factory=lambda: collections.defaultdict(set))
    figures: dict[str, Any] = field(default_factory=dict)


def cluster_env(infrastructure: Settings, work: Path, corpus: Corpus) -> dict[str, str]:
    """The drill's own names, and a cluster on the ports after the session broker's (its
    controller is on the next one; a slot's ports up to +99 are its own)."""
    run = uuid.uuid4().hex[:8]
    first = services.kafka_endpoint(infrastructure)[1] + 2
    return {
        "FINPIPE_HOME": str(work / "home"),
        "KAFKA_SERVER": ",".join(f"localhost:{first + 2 * i}" for i in range(BROKERS)),
        "KAFKA_TOPIC": f"cluster-{run}",
        "KAFKA_DLQ_TOPIC": f"cluster-{run}-dlq",
        "LAKE_PREFIX": f"cluster-{run}/processed_trades",
        "SPARK_CHECKPOINT_DIR": str(work / "checkpoint"),
        "FINNHUB_TICKERS": ",".join(SYMBOLS),
        "FINPIPE_REPLAY_FILE": str(corpus.path),
        "FINPIPE_REPLAY_SPEED": "1",
        "SIMULATOR_PORT": str(free_port()),
        "PRODUCER_METRICS_PORT": "0",
        "SPARK_METRICS_PORT": "0",
    }


def stream_process(settings: Settings, name: str, env: dict[str, str]) -> ManagedProcess:
    return ManagedProcess(
        name=name, argv=[str(BIN / f"finpipe-{name}")], home=settings.home, env=env
    )


def leaders(settings: Settings) -> dict[int, int]:
    """Partition -> its leader's node id."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_server})
    topic = admin.list_topics(settings.kafka_topic, timeout=10).topics[settings.kafka_topic]
    return {p: meta.leader for p, meta in topic.partitions.items()}


def pick_victim(settings: Settings, records: dict[int, int]) -> int:
    """The broker leading the most partitions, the one leading the most records among
    equals (each broker usually leads one of three partitions)."""
    led: dict[int, list[int]] = collections.defaultdict(list)
    for partition, leader in leaders(settings).items():
        led[leader].append(partition)
    return max(led, key=lambda node: (len(led[node]), sum(records[p] for p in led[node])))


class Watermarks:
    """High watermarks read from the cluster: what Kafka acknowledged (``acks=all`` with
    two in-sync replicas) on each partition."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.kafka_topic
        self.config = {
            "bootstrap.servers": settings.kafka_server,
            "group.id": "cluster-drill-probe",
        }

    def read(self, partitions: list[int]) -> dict[int, int] | None:
        # A client of its own per read: a consumer with nothing assigned keeps asking the
        # leader its metadata named (the killed broker) until its periodic refresh, minutes
        # later, so a long-lived probe saw no new writes although Spark committed them.
        consumer = Consumer(self.config)
        try:
            return {
                p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=2)[1]
                for p in partitions
            }
        except KafkaException:  # a partition without a leader yet
            return None
        finally:
            consumer.close()

    def close(self) -> None:
        """Nothing held between reads."""


@pytest.fixture(scope="module")
def drill(
    infrastructure: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterDrill]:
    started = time.monotonic()
    work = tmp_path_factory.mktemp("cluster")
    corpus = write_corpus(work / "corpus.jsonl", REPLAY_SECONDS, int(time.time() * 1000))
    env = cluster_env(infrastructure, work, corpus)
    settings = load_settings(**env)
    streams = {
        "simulator": infra_stack.simulator_process(settings),
        "producer": stream_process(settings, "producer", env),
        "spark": stream_process(settings, "spark", env),
    }
    brokers = services.kafka_processes(settings)
    seen = ClusterDrill(settings, corpus, streams)
    try:
        services.start_kafka(settings)
        seen.figures["cluster_start_s"] = round(time.monotonic() - started, 1)
        services.ensure_topics(settings)
        for name in ("spark", "simulator", "producer"):
            streams[name].start()
        _kill_and_restart_the_leader(seen, brokers)
        seen.figures["drill_s"] = round(time.monotonic() - started)
        yield seen
    finally:
        for process in streams.values():
            process.stop()
        stop_together(brokers)


def _note_pids(seen: ClusterDrill) -> None:
    """Record each stream's process; fail at once, with its log, when one has exited
    (nothing here would restart it)."""
    for stream in ("producer", "spark"):
        process = seen.streams[stream]
        assert process.pid() is not None, f"{stream} exited:\n{tail(process.log_file, 40)}"
        found = beat(seen.settings, stream)
        if found:
            seen.pids[stream].add(int(found["pid"]))


def _kill_and_restart_the_leader(seen: ClusterDrill, brokers: list[ManagedProcess]) -> None:
    settings, corpus = seen.settings, seen.corpus

    def first_batch() -> bool:
        _note_pids(seen)
        found = beat(settings, "spark")
        return bool(found and found.get("total_rows"))

    wait_for("a Spark batch with rows", first_batch, 300)
    producer = beat(settings, "producer")
    assert producer is not None and producer["received"] < corpus.items, "the replay ended early"
    _note_pids(seen)

    ends = kafka_end_offsets(settings)
    flowing = sorted(p for p, end in ends.items() if end)
    seen.victim = pick_victim(settings, ends)
    watermarks = Watermarks(settings)
    try:
        at_kill = watermarks.read(flowing)
        assert at_kill is not None
        victim = brokers[seen.victim - 1]
        victim_pid = victim.pid()
        assert victim_pid is not None, f"kafka-{seen.victim} is not running"
        os.killpg(victim_pid, signal.SIGKILL)
        seen.marks["kill"] = killed = time.monotonic()
        resumed = _watch_the_resumption(seen, watermarks, at_kill)
    finally:
        watermarks.close()
    seen.figures.update(
        victim=f"kafka-{seen.victim}",
        partitions_with_trades=flowing,
        deliveries_resumed_s=round(resumed["deliveries"] - killed, 1),
        lake_commits_resumed_s=round(resumed["lake"] - killed, 1),
    )
    time.sleep(max(0.0, killed + BROKER_DOWN_SECONDS - time.monotonic()))
    services.prepare_kafka(settings)
    victim.start()
    seen.marks["restart"] = restarted = time.monotonic()

    def rejoined() -> bool:
        admin = AdminClient({"bootstrap.servers": settings.kafka_server})
        topic = admin.list_topics(settings.kafka_topic, timeout=10).topics[settings.kafka_topic]
        return all(seen.victim in meta.isrs for meta in topic.partitions.values())

    wait_for(f"kafka-{seen.victim} back in every partition's ISR", rejoined, 180, every=1)
    seen.figures["isr_rejoined_after_restart_s"] = round(time.monotonic() - restarted, 1)

    def replay_delivered() -> bool:
        _note_pids(seen)
        b = beat(settings, "producer")
        return bool(b) and b["received"] == corpus.items and b["backlog_records"] == 0

    wait_for("the whole replay received and delivered", replay_delivered, REPLAY_SECONDS + 300)

    def caught_up() -> bool:
        _note_pids(seen)
        return lake_rows(settings) >= len(corpus.trades)

    wait_for("Spark to catch up", caught_up, 300, every=2)


def _watch_the_resumption(
    seen: ClusterDrill, watermarks: Watermarks, at_kill: dict[int, int]
) -> dict[str, float]:
    """When every partition with trades took new writes, and when Spark had committed
    records past the kill on each, first."""
    resumed: dict[str, float] = {}
    deadline = time.monotonic() + 240
    while len(resumed) < 2:
        assert time.monotonic() < deadline, f"no resumption after the kill: {resumed}"
        now = watermarks.read(list(at_kill))
        if "deliveries" not in resumed and now and all(now[p] > at_kill[p] for p in at_kill):
            resumed["deliveries"] = time.monotonic()
        spark = beat(seen.settings, "spark")
        committed = heartbeat_offsets(spark, seen.settings.kafka_topic) if spark else {}
        if "lake" not in resumed and all(committed.get(str(p), 0) > at_kill[p] for p in at_kill):
            resumed["lake"] = time.monotonic()
        _note_pids(seen)
        time.sleep(0.5)
    return resumed


def lake_rows(settings: Settings) -> int:
    con = lake.duckdb_with_lake(settings)
    return con.execute("SELECT count(*) FROM processed_trades").fetchone()[0]


# --- what the drill saw, judged ---------------------------------------------------------


def test_topics_get_three_replicas_and_two_in_sync(drill: ClusterDrill) -> None:
    settings = drill.settings
    admin = AdminClient({"bootstrap.servers": settings.kafka_server})
    for name in (settings.kafka_topic, settings.kafka_dlq_topic):
        topic = admin.list_topics(name, timeout=10).topics[name]
        assert {len(meta.replicas) for meta in topic.partitions.values()} == {3}, name
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        config = admin.describe_configs([resource])[resource].result(timeout=30)
        assert config["min.insync.replicas"].value == "2", name


def test_the_lake_holds_exactly_the_replayed_trades(drill: ClusterDrill) -> None:
    found = reconcile_lake(drill.settings, drill.corpus)
    print(found)
    assert found.exact, found
    assert found.rows == sum(kafka_end_offsets(drill.settings).values())


def test_kafka_holds_every_logged_trade_once_by_source_sequence(drill: ClusterDrill) -> None:
    settings = drill.settings
    expected, letters = expected_items(settings.producer_log_path, settings, "replay")
    trades = collections.Counter(
        source_position(value) for _, value in read_topic(settings, settings.kafka_topic)
    )
    dead = read_topic(settings, settings.kafka_dlq_topic)
    assert set(trades) == expected - letters and max(trades.values()) == 1
    assert {source_position(value) for _, value in dead} == letters
    assert collections.Counter(v["raw"] for _, v in dead) == collections.Counter(
        drill.corpus.malformed
    )


def test_both_streams_rode_out_the_lost_broker_in_one_process(drill: ClusterDrill) -> None:
    assert {k: len(v) for k, v in drill.pids.items()} == {"producer": 1, "spark": 1}
    for stream in ("producer", "spark"):
        assert all(pid_alive(pid) for pid in drill.pids[stream]), f"{stream} exited"
    final = beat(drill.settings, "producer")
    assert final is not None and final["frames_not_logged"] == 0
    print("cluster drill: " + json.dumps(drill.figures))
