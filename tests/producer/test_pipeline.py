"""Simulator -> producer -> Kafka over real sockets and the real test broker.

Every test ends by reconciling the producer's counters with what the topics hold.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finpipe.contracts import TradeRecord
from finpipe.health import StreamReporter, read_health
from finpipe.settings import Settings
from producer.counters import Counters
from producer.frames import FrameProcessor
from producer.simulator.market import Market
from producer.simulator.server import SimulatorServer
from tests.support.waiting import wait_for

Reader = Callable[[Settings, str], list[tuple[str | None, dict[str, Any]]]]


def _reconcile(
    read_topic: Reader, settings: Settings, counters: Counters
) -> tuple[list[Any], list[Any]]:
    """The books balance and the topics hold exactly what the counters say."""
    assert counters.in_flight == 0 and counters.delivery_errors == 0
    assert counters.balanced(), counters.snapshot()
    trades = read_topic(settings, settings.kafka_topic)
    letters = read_topic(settings, settings.kafka_dlq_topic)
    assert len(trades) == counters.delivered == counters.produced
    assert len(letters) == counters.dead_lettered
    assert counters.received == len(trades) + len(letters)
    return trades, letters


def _sim_settings(settings: Settings, sim: SimulatorServer, **update: Any) -> Settings:
    return settings.model_copy(update={"simulator_port": sim.port, **update})


def test_simulated_trades_reach_kafka_with_every_field(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    run_producer: Callable[..., Any],
    topic_reader: Reader,
) -> None:
    sim = start_simulator(trades_per_second=40, tick_seconds=0.1)
    settings = _sim_settings(topics_settings, sim)
    with StreamReporter(settings, "producer") as reporter:
        running = run_producer(settings, reporter=reporter)
        wait_for("300 deliveries", lambda: running.counters.delivered >= 300, 30)
        assert running.stop() == 0
    c = running.counters
    trades, letters = _reconcile(topic_reader, settings, c)
    assert not letters and c.dead_lettered == 0
    health = read_health(settings, "producer")
    assert health is not None and health["final"] and health["delivered"] == c.delivered
    assert set(health) >= {"frames", "trades_received", "reconnects", "last_trade_ts_ms"}
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    for key, value in trades:
        record = TradeRecord(**value)
        assert set(value) == set(TradeRecord.__struct_fields__)
        assert key == record.symbol and record.symbol in settings.finnhub_tickers
        assert record.price > 0 and record.volume >= 0
        assert isinstance(record.trade_ts_ms, int) and isinstance(record.ingest_ts_ms, int)
        assert record.trade_ts_ms <= record.ingest_ts_ms + 1000 <= now_ms + 1000
        assert now_ms - 120_000 < record.trade_ts_ms
        assert record.source == "simulator"
        if record.symbol.startswith("BINANCE:"):
            assert record.conditions is None
        else:
            assert record.volume == int(record.volume)
            assert record.conditions is None or all(isinstance(x, str) for x in record.conditions)
    assert {k for k, _ in trades} == set(settings.finnhub_tickers)
    assert any(v["volume"] != int(v["volume"]) for _, v in trades)  # crypto keeps fractions
    assert c.last_trade_ts_ms == max(v["trade_ts_ms"] for _, v in trades)


RECORDED = [
    {"type": "ping"},
    {
        "type": "trade",
        "data": [
            {"p": 94000.5, "s": "BINANCE:BTCUSDT", "t": 1546300800123, "v": 0.0015, "c": None},
            {"p": 157.25, "s": "AAPL", "t": 1546300800200, "v": 0, "c": ["1", "12"]},
            {"p": 101.5, "s": "MSFT", "t": 1546300800300, "v": 300},
        ],
    },
    {"type": "error", "msg": "Invalid symbol FOO$"},
    {
        "type": "trade",
        "data": [
            {"p": 157.3, "s": "AAPL", "t": 1546300801000, "v": 100, "c": ["1"]},
            {"p": -1, "s": "AAPL", "t": 1546300801001, "v": 100},
            {"p": 10.0, "s": "GME", "t": 1546300801002, "v": 1},
            {"p": "3300.1", "s": "BINANCE:ETHUSDT", "t": 1546300801003, "v": 1},
            {"p": 3300.1, "s": "BINANCE:ETHUSDT", "t": 1546300801004, "v": 2.5},
        ],
    },
]


def test_replaying_a_recorded_session_gives_exactly_its_records(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    run_producer: Callable[..., Any],
    topic_reader: Reader,
    tmp_path: Path,
) -> None:
    path = tmp_path / "session.jsonl"
    lines = [json.dumps(frame) for frame in RECORDED] + ['{"type":"trade","data":[{"p":1']
    path.write_text("\n".join(lines) + "\n")
    sim = start_simulator(replay_file=path, speed=50)
    settings = _sim_settings(topics_settings, sim, replay_file=path)
    running = run_producer(settings)
    wait_for(
        "the 9 items settled",
        lambda: running.counters.received == 9 and running.counters.in_flight == 0,
        30,
    )
    assert running.stop() == 0
    c = running.counters
    assert (c.frames, c.pings, c.error_frames, c.malformed_frames) == (5, 1, 1, 1)
    assert c.last_error == "feed error: Invalid symbol FOO$"
    trades, letters = _reconcile(topic_reader, settings, c)
    got = sorted((v["trade_ts_ms"], k, v) for k, v in trades)
    expected = [
        ("BINANCE:BTCUSDT", 94000.5, 0.0015, 1546300800123, None),
        ("AAPL", 157.25, 0.0, 1546300800200, ["1", "12"]),
        ("MSFT", 101.5, 300.0, 1546300800300, None),
        ("AAPL", 157.3, 100.0, 1546300801000, ["1"]),
        ("BINANCE:ETHUSDT", 3300.1, 2.5, 1546300801004, None),
    ]
    assert [(k, v["price"], v["volume"], v["trade_ts_ms"], v["conditions"]) for _, k, v in got] == [
        e for e in expected
    ]
    assert all(v["source"] == "replay" and v["ingest_ts_ms"] > v["trade_ts_ms"] for _, _, v in got)
    reasons = sorted(v["reason"].split(" ")[0] for _, v in letters)
    assert reasons == ["invalid", "not", "price", "symbol"]
    assert all(v["source"] == "replay" for _, v in letters)


def test_reconnects_and_resubscribes_after_a_dropped_socket(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    run_producer: Callable[..., Any],
    topic_reader: Reader,
) -> None:
    sim = start_simulator(trades_per_second=20, tick_seconds=0.1)
    running = run_producer(_sim_settings(topics_settings, sim))
    wait_for("first deliveries", lambda: running.counters.delivered > 20, 30)
    sim.inject("drop")
    wait_for("a reconnect", lambda: running.counters.reconnects >= 1, 30)
    before = running.counters.delivered
    wait_for("trades after reconnecting", lambda: running.counters.delivered > before + 20, 30)
    assert running.stop() == 0
    assert sim.stats.connections >= 2
    assert "connection lost" in (running.counters.last_error or "")
    _reconcile(topic_reader, running.producer.settings, running.counters)


def test_a_silent_socket_is_declared_dead(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    run_producer: Callable[..., Any],
    topic_reader: Reader,
) -> None:
    sim = start_simulator(trades_per_second=20, tick_seconds=0.1)
    running = run_producer(_sim_settings(topics_settings, sim, silent_socket_seconds=1.5))
    wait_for("first deliveries", lambda: running.counters.delivered > 10, 30)
    sim.inject("stall", seconds=4)
    wait_for("silence detection", lambda: running.counters.silent_socket_reconnects >= 1, 30)
    assert "PRODUCER_SILENT_SECONDS" in (running.counters.last_error or "")
    before = running.counters.delivered
    wait_for("recovery", lambda: running.counters.delivered > before + 10, 30)
    assert running.stop() == 0
    assert running.counters.reconnects >= 1
    _reconcile(topic_reader, running.producer.settings, running.counters)


def test_garbage_and_error_frames_are_dead_lettered_without_a_crash(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    run_producer: Callable[..., Any],
    topic_reader: Reader,
) -> None:
    sim = start_simulator(trades_per_second=10, tick_seconds=0.1)
    running = run_producer(_sim_settings(topics_settings, sim))
    wait_for("first deliveries", lambda: running.counters.delivered > 5, 30)
    sim.inject("garbage", symbol="AAPL")
    sim.inject("error", message="Subscribing to too many symbols")
    wait_for(
        "6 dead letters and the error frame",
        lambda: running.counters.dead_lettered == 6 and running.counters.error_frames == 1,
        30,
    )
    assert running.counters.reconnects == 0 and running.thread.is_alive()
    assert running.stop() == 0
    _, letters = _reconcile(topic_reader, running.producer.settings, running.counters)
    assert running.counters.malformed_frames == 5
    raws = {v["raw"] for _, v in letters}
    assert "}{ this is not json" in raws and "[1, 2, 3]" in raws


def _mangled_frames(rng: random.Random, symbols: tuple[str, ...], count: int) -> list[str]:
    """Plausible frames, many of them damaged the ways a feed or a recording can be."""
    market = Market(trades_per_second=20, seed=rng.randrange(1000))
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000) - 60_000
    lines = []
    for i in range(count):
        trades = market.tick([*symbols, "GME"], now_ms + i * 100, 0.1)
        for trade in trades:
            if rng.random() < 0.1:
                field = rng.choice(["p", "s", "t", "v", "c"])
                trade[field] = rng.choice([None, "x", -1, 0, 1.5, [], {}, True, 10**20])
            if rng.random() < 0.03:
                del trade[rng.choice(list(trade))]
        text = json.dumps({"type": "trade", "data": trades})
        roll = rng.random()
        if roll < 0.05:
            text = text[: rng.randrange(len(text))]
        elif roll < 0.08:
            text = json.dumps({"type": rng.choice(["ping", "error", "news", None])})
        elif roll < 0.10:
            text = "".join(rng.choice(string.printable.strip()) for _ in range(20))
        lines.append(text)
    return lines


def test_mangled_frames_are_all_accounted_for_in_kafka(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    run_producer: Callable[..., Any],
    topic_reader: Reader,
    tmp_path: Path,
) -> None:
    lines = _mangled_frames(random.Random(20251124), topics_settings.finnhub_tickers, 300)
    path = tmp_path / "mangled.jsonl"
    path.write_text("\n".join(lines) + "\n")
    processor = FrameProcessor(topics_settings.finnhub_tickers, "replay")
    offline = [processor.process(line) for line in lines]
    expected_good = sum(len(r.records) for r in offline)
    expected_bad = sum(len(r.dead_letters) for r in offline)
    assert expected_good > 500 and expected_bad > 50

    sim = start_simulator(replay_file=path, speed=0)
    running = run_producer(_sim_settings(topics_settings, sim, replay_file=path))
    wait_for(
        "every replayed frame settled",
        lambda: running.counters.frames == len(lines) and running.counters.in_flight == 0,
        30,
    )
    assert running.stop() == 0
    c = running.counters
    assert (c.delivered, c.dead_lettered) == (expected_good, expected_bad)
    _reconcile(topic_reader, running.producer.settings, c)
