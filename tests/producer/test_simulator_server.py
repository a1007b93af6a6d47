"""The simulator over real sockets, spoken to with the producer's own client library."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import websocket

from producer.simulator.server import SimulatorServer
from tests.support.network import free_port


def _frames(ws: websocket.WebSocket, count: int) -> list[dict]:
    ws.settimeout(10)
    return [json.loads(ws.recv()) for _ in range(count)]


def test_token_is_checked_at_the_handshake(start_simulator: Callable[..., SimulatorServer]) -> None:
    sim = start_simulator(token="right")
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"{sim.url}/?token=wrong", timeout=5)
    assert refused.value.status_code == 401
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(sim.url, timeout=5)
    websocket.create_connection(f"{sim.url}/?token=right", timeout=5).close()
    assert sim.stats.rejected_handshakes == 2


def test_trades_follow_subscriptions(start_simulator: Callable[..., SimulatorServer]) -> None:
    sim = start_simulator(trades_per_second=200, tick_seconds=0.05, ignore_market_hours=True)
    ws = websocket.create_connection(sim.url, timeout=5)
    ws.send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))
    ws.send(json.dumps({"type": "subscribe", "symbol": "BAD$"}))
    frames = _frames(ws, 4)
    errors = [f for f in frames if f["type"] == "error"]
    assert errors == [{"type": "error", "msg": "Invalid symbol BAD$"}]
    trades = [t for f in frames if f["type"] == "trade" for t in f["data"]]
    assert trades and {t["s"] for t in trades} == {"AAPL"}
    ws.send(json.dumps({"type": "subscribe", "symbol": "BINANCE:ETHUSDT"}))
    ws.send(json.dumps({"type": "unsubscribe", "symbol": "AAPL"}))
    later = [t["s"] for f in _frames(ws, 8)[3:] if f["type"] == "trade" for t in f["data"]]
    assert later and set(later) == {"BINANCE:ETHUSDT"}
    ws.close()


def test_pings_and_injected_faults_reach_the_client(
    start_simulator: Callable[..., SimulatorServer],
) -> None:
    sim = start_simulator(trades_per_second=0, ping_seconds=0.2)
    ws = websocket.create_connection(sim.url, timeout=5)
    ws.send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))
    assert _frames(ws, 1) == [{"type": "ping"}]
    sim.inject("error", message="Subscribing to too many symbols")
    sim.inject("garbage")
    texts = []
    ws.settimeout(5)
    while len(texts) < 7:
        text = ws.recv()
        if text != '{"type":"ping"}':
            texts.append(text)
    assert json.loads(texts[0]) == {"type": "error", "msg": "Subscribing to too many symbols"}
    assert texts[1] == "}{ this is not json"
    sim.inject("drop")
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        while True:
            ws.recv()


def test_replay_sends_the_file_verbatim_once(
    start_simulator: Callable[..., SimulatorServer], tmp_path: Path
) -> None:
    lines = ['{"type":"ping"}', "not json at all", '{"type":"trade","data":[]}']
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(lines) + "\n")
    sim = start_simulator(replay_file=path, speed=0, ping_seconds=60)
    ws = websocket.create_connection(sim.url, timeout=5)
    ws.send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))
    ws.settimeout(5)
    assert [ws.recv() for _ in lines] == lines
    ws.settimeout(0.5)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()
    assert sim.replay_finished
    ws.close()


SIMULATOR = str(Path(sys.executable).parent / "finpipe-simulator")


def test_the_console_script_replays_a_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"type":"trade","data":[{"p":1.5,"s":"AAPL","t":1546300800000,"v":1}]}\n')
    port = free_port()
    proc = subprocess.Popen(
        [SIMULATOR, "--port", str(port), "--replay", str(path), "--speed", "0"],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ws = websocket.create_connection(f"ws://127.0.0.1:{port}", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "the simulator did not start"
                time.sleep(0.1)
        ws.send(json.dumps({"type": "subscribe", "symbol": "AAPL"}))
        assert json.loads(ws.recv())["data"][0]["p"] == 1.5
        ws.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert b'"event": "simulator listening"' in stderr


def test_the_console_script_names_a_missing_replay_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    result = subprocess.run(
        [SIMULATOR, "--port", "0", "--replay", str(missing)], capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert b"FINPIPE_REPLAY_FILE" in result.stderr and str(missing).encode() in result.stderr
