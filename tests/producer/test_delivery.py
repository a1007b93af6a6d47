"""Delivery from the receive log: every record carries its log position, a record the
broker refuses for good is dead-lettered with the broker's reason, and nothing that is
only late ever goes to the dead-letter topic."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from finpipe.contracts import parse_log_position
from finpipe.settings import Settings
from producer.delivery import producer_config
from producer.simulator.server import SimulatorServer
from tests.support.waiting import wait_for


def test_the_producer_is_durable_and_batched(settings: Settings) -> None:
    config = producer_config(settings)
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["compression.type"] in ("lz4", "zstd") and config["linger.ms"] > 0
    assert config["delivery.timeout.ms"] == settings.kafka_delivery_timeout_seconds * 1000
    shorter = settings.model_copy(update={"kafka_delivery_timeout_seconds": 7})
    assert producer_config(shorter)["delivery.timeout.ms"] == 7000


def _replay(tmp_path: Path, frames: list[Any]) -> Path:
    path = tmp_path / "frames.jsonl"
    path.write_text("\n".join(json.dumps(f) for f in frames) + "\n")
    return path


def test_every_record_carries_its_log_id_and_source_sequence(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    run_producer: Callable[..., Any],
    topic_reader: Callable[..., list[tuple[str | None, dict[str, Any]]]],
    tmp_path: Path,
) -> None:
    now = int(time.time() * 1000)
    frames = [
        {
            "type": "trade",
            "data": [{"p": 1.5 + i, "s": "AAPL", "t": now, "v": 1} for i in range(3)],
        },
        {"type": "ping"},
        {
            "type": "trade",
            "data": [
                {"p": 2.0, "s": "MSFT", "t": now, "v": 1},
                {"p": -1, "s": "MSFT", "t": now, "v": 1},
            ],
        },
    ]
    path = _replay(tmp_path, frames)
    sim = start_simulator(replay_file=path, speed=0)
    settings = topics_settings.model_copy(update={"simulator_port": sim.port, "replay_file": path})
    running = run_producer(settings)
    wait_for(
        "the 5 trades delivered",
        lambda: running.counters.received == 5 and running.counters.in_flight == 0,
        30,
    )
    assert running.stop() == 0
    log_id = running.producer.journal.log_id
    trades = [
        parse_log_position(v["log_position"])
        for _, v in topic_reader(settings, settings.kafka_topic)
    ]
    letters = [
        parse_log_position(v["log_position"])
        for _, v in topic_reader(settings, settings.kafka_dlq_topic)
    ]
    assert {p.log_id for p in trades + letters} == {log_id}
    by_seq = sorted((p.seq, p.item) for p in trades)
    assert by_seq == [(0, 0), (0, 1), (0, 2), (2, 0)]  # seq 1 is the ping: no record
    assert [(p.seq, p.item) for p in letters] == [(2, 1)]
    health = running.producer.health()
    assert health["backlog_records"] == 0 and health["acked_seq"] == 2
    assert health["oldest_undelivered_age_s"] is None and health["log_state"] == "ok"


def test_a_record_the_broker_refuses_for_good_is_dead_lettered_with_the_reason(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    run_producer: Callable[..., Any],
    topic_reader: Callable[..., list[tuple[str | None, dict[str, Any]]]],
    tmp_path: Path,
) -> None:
    # A trades topic whose broker-side size limit no record batch fits in.
    refusing = f"it-refusing-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": topics_settings.kafka_server})
    new = NewTopic(refusing, 1, 1, config={"max.message.bytes": "100"})
    for future in admin.create_topics([new]).values():
        future.result(30)
    now = int(time.time() * 1000)
    path = _replay(
        tmp_path,
        [
            {
                "type": "trade",
                "data": [{"p": i + 1.5, "s": "AAPL", "t": now, "v": 1} for i in range(3)],
            }
        ],
    )
    sim = start_simulator(replay_file=path, speed=0)
    settings = topics_settings.model_copy(
        update={"kafka_topic": refusing, "simulator_port": sim.port, "replay_file": path}
    )
    running = run_producer(settings)
    wait_for(
        "the 3 trades settled",
        lambda: running.counters.received == 3 and running.counters.in_flight == 0,
        30,
    )
    assert running.stop() == 0
    c = running.counters
    assert c.balanced() and (c.delivered, c.dead_lettered, c.refused_to_dlq) == (0, 3, 3)
    assert c.delivery_errors == 0  # a refusal is not a delivery failure to retry
    letters = topic_reader(settings, settings.kafka_dlq_topic)
    assert len(letters) == 3 and {key for key, _ in letters} == {"AAPL"}
    assert all("Message size too large" in v["reason"] for _, v in letters)
    assert sorted(v["raw"].split('"price":')[1][:3] for _, v in letters) == ["1.5", "2.5", "3.5"]
    # A letter keeps the refused record's place in the log: a rescan finds it there.
    positions = sorted(parse_log_position(v["log_position"])[1:] for _, v in letters)
    assert positions == [(0, 0), (0, 1), (0, 2)]


def test_a_frame_larger_than_the_client_queue_goes_in_parts_exactly_once(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    run_producer: Callable[..., Any],
    topic_reader: Callable[..., list[tuple[str | None, dict[str, Any]]]],
    tmp_path: Path,
) -> None:
    # librdkafka takes 40 messages at a time: each 100-trade frame is queued in parts, the
    # rest refused; every refusal ends the session, and the rescan sends only what is missing.
    now = int(time.time() * 1000)
    frames = [
        {
            "type": "trade",
            "data": [{"p": 1.0 + i, "s": "AAPL", "t": now, "v": 1} for i in range(100)],
        }
        for _ in range(2)
    ]
    path = _replay(tmp_path, frames)
    sim = start_simulator(replay_file=path, speed=0)
    settings = topics_settings.model_copy(update={"simulator_port": sim.port, "replay_file": path})
    running = run_producer(settings, kafka_config={"queue.buffering.max.messages": 40})
    wait_for("200 deliveries", lambda: running.counters.delivered == 200, 120)
    assert running.stop() == 0
    c = running.counters
    assert c.balanced() and c.in_flight == 0 and c.dead_lettered == 0
    assert c.delivery_sessions > 2 and c.resent_skipped > 0
    found = [
        parse_log_position(v["log_position"])
        for _, v in topic_reader(settings, settings.kafka_topic)
    ]
    assert sorted((p.seq, p.item) for p in found) == [(s, i) for s in (0, 1) for i in range(100)]
    assert topic_reader(settings, settings.kafka_dlq_topic) == []
