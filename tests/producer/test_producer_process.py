"""`finpipe-producer` as a real process: SIGTERM flushes with nothing lost, a bad token
stops it at once with a message naming the setting, and the token never leaks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finpipe.settings import Settings
from producer.simulator.server import SimulatorServer
from tests.support.waiting import wait_for

PRODUCER = str(Path(sys.executable).parent / "finpipe-producer")
TOKEN = "tok-SECRET-4f9a"


def _env(settings: Settings, home: Path, **extra: str) -> dict[str, str]:
    return os.environ | {
        "FINPIPE_HOME": str(home),
        "KAFKA_TOPIC": settings.kafka_topic,
        "KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
        "FINNHUB_TICKERS": ",".join(settings.finnhub_tickers),
        **extra,
    }


def test_sigterm_flushes_everything_and_exits_0(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    topic_reader: Callable[..., list[tuple[str | None, dict[str, Any]]]],
    tmp_path: Path,
) -> None:
    # With a token, so the run also proves the token stays out of logs, health and Kafka.
    sim = start_simulator(token=TOKEN, trades_per_second=300, tick_seconds=0.05)
    env = _env(topics_settings, tmp_path, FINNHUB_API_TOKEN=TOKEN, FINNHUB_WS_URL=sim.url)
    proc = subprocess.Popen(PRODUCER, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for("the producer streaming", lambda: sim.stats.trades_sent > 3000, 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    logs = (stdout + stderr).decode()
    assert proc.returncode == 0, logs
    health = json.loads((tmp_path / "state" / "producer_health.json").read_text())
    assert health["final"] is True and health["balanced"] is True
    assert health["in_flight"] == 0 and health["dead_lettered"] == 0
    assert health["delivered"] == health["received"] == health["trades_received"] > 2000
    assert health["source"] == "finnhub" and health["feed_url"].endswith("token=***")
    trades = topic_reader(topics_settings, topics_settings.kafka_topic)
    assert len(trades) == health["delivered"]
    assert {v["source"] for _, v in trades} == {"finnhub"}
    assert topic_reader(topics_settings, topics_settings.kafka_dlq_topic) == []
    assert TOKEN not in logs
    assert TOKEN not in json.dumps(health)
    assert not any(TOKEN in json.dumps(v) for _, v in trades)
    assert "producer stopped; everything delivered" in logs


def test_a_bad_token_stops_at_once_naming_the_setting(
    topics_settings: Settings,
    start_simulator: Callable[..., SimulatorServer],
    tmp_path: Path,
) -> None:
    sim = start_simulator(token="the-right-one")
    env = _env(topics_settings, tmp_path, FINNHUB_API_TOKEN=TOKEN, FINNHUB_WS_URL=sim.url)
    result = subprocess.run(PRODUCER, env=env, capture_output=True, timeout=60)
    logs = (result.stdout + result.stderr).decode()
    assert result.returncode == 2, logs
    assert "FINNHUB_API_TOKEN" in logs and "401" in logs
    assert TOKEN not in logs
    assert sim.stats.rejected_handshakes == 1  # no retry loop
    # A fatal stop is reported, but never as a clean final report.
    health = json.loads((tmp_path / "state" / "producer_health.json").read_text())
    assert "final" not in health and TOKEN not in json.dumps(health)
