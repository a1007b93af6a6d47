"""Producer throughput: replay -> WebSocket -> producer -> Kafka (acks=all), vs a naive loop.

    .venv/bin/python bench/producer_throughput.py [--trades 3000000] [--per-frame 100]
        [--flush-ms 200 --flush-ms 50 --flush-ms 1000]

* Writes a synthetic session (the simulator's market model) as a JSON-lines replay file.
* Serves it with ``finpipe-simulator --replay FILE --speed 0`` in its own process.
* Runs the real ``TradeProducer`` (in this process, in threads) with its durable receive
  log, once per ``--flush-ms`` window, until Kafka has confirmed every trade; reports
  trades/s from the first frame to the last delivery report, and the peak RSS of this
  process (it holds nothing but the producer).
* The same without the log, in the same run: the single-threaded loop the producer had
  before (receive, validate, produce, serve reports), with the same validation and
  Kafka settings.
* Then the naive baseline, as simple peers write it: websocket-client with its defaults,
  stdlib ``json``, one ``produce`` + ``flush`` per trade, for ``--baseline-seconds``.

Needs the test Kafka (``localhost:19092``, started by the test suite with
FINPIPE_KEEP_SERVICES=1) or KAFKA_SERVER; topics are unique per run.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KAFKA_SERVER", "localhost:19092")
os.environ.setdefault("FINPIPE_ENV_FILE", "")
os.environ.setdefault("FINPIPE_HOME", str(Path(tempfile.gettempdir()) / "finpipe-bench"))

import msgspec  # noqa: E402
import websocket  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

from finpipe.contracts import SOURCE_LOG_HEADER, SOURCE_SEQ_HEADER, source_seq_value  # noqa: E402
from finpipe.logs import configure_logging  # noqa: E402
from finpipe.settings import DEFAULT_TICKERS, load_settings  # noqa: E402
from producer.app import TradeProducer  # noqa: E402
from producer.delivery import producer_config  # noqa: E402
from producer.feed import open_feed  # noqa: E402
from producer.frames import FrameProcessor  # noqa: E402
from producer.simulator.market import Market  # noqa: E402
from producer.topics import ensure_topics  # noqa: E402


def write_session(path: Path, trades: int, per_frame: int) -> None:
    """About ``per_frame`` trades per frame, all symbols mixed, stamped in the last hours."""
    rate = per_frame / len(DEFAULT_TICKERS)
    market = Market(trades_per_second=rate, burst_probability=0.0, seed=7)
    encoder = msgspec.json.Encoder()
    now_ms = int(time.time() * 1000) - 1000 * (trades // per_frame + 3600)
    written = 0
    with path.open("wb") as out:
        while written < trades:
            batch = market.tick(list(DEFAULT_TICKERS), now_ms, 1.0)[: trades - written]
            out.write(encoder.encode({"type": "trade", "data": batch}) + b"\n")
            written += len(batch)
            now_ms += 1000


def start_simulator(replay: Path, port: int, loop: bool = False) -> subprocess.Popen[bytes]:
    cmd = [str(ROOT / ".venv/bin/finpipe-simulator"), "--replay", str(replay), "--speed", "0"]
    cmd += ["--port", str(port)] + (["--loop"] if loop else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            websocket.create_connection(f"ws://127.0.0.1:{port}", timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the simulator did not start")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_producer(
    trades: int, port: int, run_id: str, flush_ms: int, log_dir: Path, profile: bool = False
) -> dict[str, float]:
    settings = load_settings(
        SIMULATOR_PORT=port,
        KAFKA_TOPIC=f"bench-trades-{run_id}",
        KAFKA_DLQ_TOPIC=f"bench-dlq-{run_id}",
        FINPIPE_REPLAY_FILE="bench.jsonl",
        PRODUCER_LOG_DIR=str(log_dir),
        PRODUCER_LOG_FLUSH_MS=flush_ms,
    )
    ensure_topics(settings, [settings.kafka_topic, settings.kafka_dlq_topic])
    producer = TradeProducer(settings)
    profiler = cProfile.Profile() if profile else None

    def run() -> None:
        if profiler is None:
            producer.run()
        else:
            profiler.runcall(producer.run)

    thread = threading.Thread(target=run, name="producer")
    thread.start()
    c = producer.counters
    while c.delivered + c.dead_lettered < trades and thread.is_alive():
        time.sleep(0.05)
    producer.stop()
    thread.join()
    assert c.balanced() and c.delivered == trades, c.snapshot()
    assert c.first_frame_ts_ms is not None and c.last_delivery_ts_ms is not None
    seconds = (c.last_delivery_ts_ms - c.first_frame_ts_ms) / 1000
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(14)
    return {"trades": c.delivered, "seconds": seconds, "rate": c.delivered / seconds}


def run_without_log(trades: int, port: int, run_id: str, headers: bool = False) -> dict[str, float]:
    """The producer's loop without the receive log: receive, validate, produce, serve
    reports, all in one thread (what the producer did before the log). ``headers``: with
    the two source headers per record the log-fed producer writes, to split their cost
    from the log's."""
    settings = load_settings(
        SIMULATOR_PORT=port,
        KAFKA_TOPIC=f"bench-nolog-{run_id}-{int(headers)}",
        KAFKA_DLQ_TOPIC=f"bench-nolog-dlq-{run_id}-{int(headers)}",
        FINPIPE_REPLAY_FILE="bench.jsonl",
    )
    ensure_topics(settings, [settings.kafka_topic, settings.kafka_dlq_topic])
    frames = FrameProcessor(settings.finnhub_tickers, "replay")
    delivered = 0

    def on_delivery(err: object, _msg: object) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1

    producer = Producer(producer_config(settings) | {"on_delivery": on_delivery})
    ws = open_feed(settings)
    produced, first, topic, seq = 0, None, settings.kafka_topic, 0
    log_header = (SOURCE_LOG_HEADER, b"0" * 32)
    while produced < trades:
        _, data = ws.recv_data()
        first = first or time.perf_counter()
        for item, (key, value) in enumerate(frames.process(data).records):
            extra = (
                {"headers": [log_header, (SOURCE_SEQ_HEADER, source_seq_value(seq, item))]}
                if headers
                else {}
            )
            try:
                producer.produce(topic, value, key, **extra)
            except BufferError:
                producer.poll(0.05)
                producer.produce(topic, value, key, **extra)
            produced += 1
        seq += 1
        producer.poll(0)
    producer.flush(60)
    assert first is not None and delivered == trades, (delivered, trades)
    seconds = time.perf_counter() - first
    ws.close()
    return {"trades": delivered, "seconds": seconds, "rate": delivered / seconds}


def run_baseline(port: int, run_id: str, seconds: float, server: str) -> dict[str, float]:
    """What simple peers do: default websocket-client, stdlib json, produce + flush."""
    topic = f"bench-naive-{run_id}"
    settings = load_settings(KAFKA_TOPIC=topic)
    ensure_topics(settings, [topic])
    producer = Producer({"bootstrap.servers": server, "acks": "all"})
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}")
    for symbol in DEFAULT_TICKERS:
        ws.send(json.dumps({"type": "subscribe", "symbol": symbol}))
    sent = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        frame = json.loads(ws.recv())
        for trade in frame.get("data") or []:
            record = {
                "symbol": trade["s"],
                "price": trade["p"],
                "volume": trade["v"],
                "trade_ts_ms": trade["t"],
                "conditions": trade.get("c"),
                "ingest_ts_ms": int(time.time() * 1000),
                "source": "replay",
            }
            producer.produce(topic, json.dumps(record).encode(), trade["s"].encode())
            producer.flush()
            sent += 1
    elapsed = time.perf_counter() - started
    ws.close()
    return {"trades": sent, "seconds": elapsed, "rate": sent / elapsed}


def _with_simulator(replay: Path, port: int, run: Any, *, loop: bool = False) -> Any:
    sim = start_simulator(replay, port, loop=loop)
    try:
        return run()
    finally:
        sim.terminate()
        sim.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trades", type=int, default=3_000_000)
    parser.add_argument("--per-frame", type=int, default=100)
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=18890)
    parser.add_argument(
        "--flush-ms",
        type=int,
        action="append",
        help="PRODUCER_LOG_FLUSH_MS of a run with the log (repeatable; default 200)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the producer thread")
    parser.add_argument("--plot", help="write a throughput bar chart to this PNG")
    args = parser.parse_args()
    configure_logging("WARNING")
    run_id = uuid.uuid4().hex[:8]
    server = os.environ["KAFKA_SERVER"]
    windows = args.flush_ms or [200]
    print(f"load average before: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory() as tmp:
        replay = Path(tmp) / "bench.jsonl"
        write_session(replay, args.trades, args.per_frame)
        size_mb = replay.stat().st_size / 1e6
        print(f"replay file: {args.trades:,} trades, {args.per_frame}/frame, {size_mb:.0f} MB")

        rss_before = peak_rss_mb()
        with_log: dict[int, dict[str, float]] = {}
        for i, window in enumerate(windows):
            log_dir = Path(tmp) / f"log-{window}"
            with_log[window] = _with_simulator(
                replay,
                args.port + i,
                lambda w=window, d=log_dir, at=args.port + i: run_producer(
                    args.trades, at, f"{run_id}-{w}", w, d, args.profile
                ),
            )
            log_mb = sum(f.stat().st_size for f in log_dir.glob("seg-*.log")) / 1e6
            rate = with_log[window]["rate"]
            print(f"  log {window:>4} ms: {rate:>9,.0f} trades/s, log {log_mb:.0f} MB")
        rss = peak_rss_mb()
        port = args.port + len(windows)
        no_log = _with_simulator(replay, port, lambda: run_without_log(args.trades, port, run_id))
        headers_only = _with_simulator(
            replay, port + 1, lambda: run_without_log(args.trades, port + 1, run_id, True)
        )
        naive = _with_simulator(
            replay,
            port + 2,
            lambda: run_baseline(port + 2, run_id, args.baseline_seconds, server),
            loop=True,
        )
    print(f"load average after: {os.getloadavg()[0]:.1f} (1 min)")
    for window, fast in with_log.items():
        print(
            f"with log, {window:>4} ms : {fast['trades']:>10,.0f} trades "
            f"in {fast['seconds']:6.2f} s "
            f"= {fast['rate']:>9,.0f} trades/s (fsync every {window} ms; acks=all, all delivered)"
        )
    print(
        f"without the log   : {no_log['trades']:>10,.0f} trades in {no_log['seconds']:6.2f} s "
        f"= {no_log['rate']:>9,.0f} trades/s (one thread: receive, validate, produce)"
    )
    print(
        f"no log, + headers : {headers_only['trades']:>10,.0f} trades in "
        f"{headers_only['seconds']:6.2f} s = {headers_only['rate']:>9,.0f} trades/s "
        "(the same loop, with the two source headers per record)"
    )
    fast = with_log[windows[0]]
    print(f"log on / log off  : {fast['rate'] / no_log['rate']:.2f} (window {windows[0]} ms)")
    print(f"peak RSS          : {rss:.0f} MB (process peak before the runs: {rss_before:.0f} MB)")
    print(
        f"naive baseline    : {naive['trades']:>10,.0f} trades in {naive['seconds']:6.2f} s "
        f"= {naive['rate']:>9,.0f} trades/s (produce + flush per trade)"
    )
    print(f"ratio             : {fast['rate'] / naive['rate']:.0f}x")
    if args.plot:
        plot(fast, naive, Path(args.plot))


def plot(fast: dict[str, float], naive: dict[str, float], path: Path) -> None:
    """Throughput of the finpipe producer and the naive baseline, same run (log scale)."""
    import plotly.graph_objects as go
    from plots import save_png  # bench/plots.py, beside this script

    figure = go.Figure(
        go.Bar(
            x=["finpipe producer", "naive: produce + flush per trade"],
            y=[fast["rate"], naive["rate"]],
            text=[f"{fast['rate']:,.0f}/s", f"{naive['rate']:,.0f}/s"],
            textposition="outside",
        )
    )
    figure.update_yaxes(type="log", title_text="trades/s delivered to Kafka (acks=all)")
    figure.update_layout(title=f"producer throughput: {fast['rate'] / naive['rate']:.0f}x")
    print(f"plot             : {save_png(figure, path, width=900, height=600)}")


if __name__ == "__main__":
    main()
