"""Producer throughput: replay -> WebSocket -> producer -> Kafka (acks=all), log on vs
off, metrics on vs off.

    .venv/bin/python bench/producer_throughput.py [--trades 1000000] [--per-frame 100]
        [--flush-ms 200 --flush-ms 50 --flush-ms 1000] [--repeats 3] [--no-metrics]

* Writes a synthetic session (the simulator's market model) as a JSON-lines replay file.
* Serves it with ``finpipe-simulator --replay FILE --speed 0`` in its own process.
* Runs the real ``TradeProducer`` (in this process, in threads) with its durable receive
  log, once per ``--flush-ms`` window, until Kafka has confirmed every trade; reports
  trades/s from the first frame to the last delivery report.
* The same with its Prometheus metrics on (the first ``--flush-ms`` window): the
  histogram observed per acknowledged record and ``/metrics`` scraped every
  ``--scrape-seconds`` (1 s: 15 times Prometheus's default rate) while it runs.
* The same without the log: the single-threaded loop the producer had before (receive,
  validate, produce, serve reports), with the same validation and Kafka settings. Like
  the producer, it waits for room in librdkafka's queue as long as it takes.
* The runs are interleaved (each repetition runs every configuration once, in a rotated
  order), so load from other work on the machine falls on all of them alike; the script
  prints each run, then per configuration the median trades/s, the median ratio to the
  no-log run of the same repetition, and CPU seconds per million trades of this process
  (user + sys, ``getrusage``: it holds nothing but the producer) and of the simulator
  (serving only, without its start-up), with the 1-minute load average before and after each run.
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
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
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

from finpipe.logs import configure_logging  # noqa: E402
from finpipe.settings import DEFAULT_TICKERS, load_settings  # noqa: E402
from producer.app import TradeProducer  # noqa: E402
from producer.delivery import producer_config  # noqa: E402
from producer.feed import open_feed  # noqa: E402
from producer.frames import FrameProcessor  # noqa: E402
from producer.metrics import ProducerMetrics  # noqa: E402
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


def free_port() -> int:
    """A port nothing listens on now (the machine may run other test services)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_simulator(replay: Path, port: int, loop: bool = False) -> subprocess.Popen[bytes]:
    cmd = [str(ROOT / ".venv/bin/finpipe-simulator"), "--replay", str(replay), "--speed", "0"]
    cmd += ["--port", str(port)] + (["--loop"] if loop else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            websocket.create_connection(f"ws://127.0.0.1:{port}", timeout=1).close()
            return proc
        except (OSError, websocket.WebSocketException):
            if proc.poll() is not None:
                raise RuntimeError("the simulator exited at start") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the simulator did not start")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + sys CPU of this process so far (every thread: the producer's)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """User + sys CPU of another live process (the simulator), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load1() -> float:
    return os.getloadavg()[0]


class Scraper:
    """Scrapes a /metrics endpoint every ``every`` seconds from a thread, as Prometheus does."""

    def __init__(self, url: str, every: float) -> None:
        self.url, self.every, self.scrapes = url, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with urllib.request.urlopen(self.url, timeout=10) as answer:
                answer.read()
            self.scrapes += 1

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.scrapes


def run_producer(
    trades: int,
    port: int,
    run_id: str,
    flush_ms: int,
    log_dir: Path,
    profile: bool = False,
    scrape_seconds: float | None = None,
) -> dict[str, float]:
    """The real producer; with ``scrape_seconds``, its metrics on and scraped that often."""
    settings = load_settings(
        SIMULATOR_PORT=port,
        KAFKA_TOPIC=f"bench-trades-{run_id}",
        KAFKA_DLQ_TOPIC=f"bench-dlq-{run_id}",
        FINPIPE_REPLAY_FILE="bench.jsonl",
        PRODUCER_LOG_DIR=str(log_dir),
        PRODUCER_LOG_FLUSH_MS=flush_ms,
        PRODUCER_METRICS_PORT=free_port() if scrape_seconds else 0,
    )
    ensure_topics(settings, [settings.kafka_topic, settings.kafka_dlq_topic])
    producer = TradeProducer(settings)
    metrics = ProducerMetrics(producer).start() if scrape_seconds else None
    scraper = Scraper(metrics.endpoint.url, scrape_seconds) if metrics and scrape_seconds else None
    profiler = cProfile.Profile() if profile else None

    def run() -> None:
        if profiler is None:
            producer.run()
        else:
            profiler.runcall(producer.run)

    cpu_before = cpu_seconds()
    thread = threading.Thread(target=run, name="producer")
    thread.start()
    c = producer.counters
    while c.delivered + c.dead_lettered < trades and thread.is_alive():
        time.sleep(0.05)
    cpu = cpu_seconds() - cpu_before
    producer.stop()
    thread.join()
    scrapes = scraper.stop() if scraper else 0
    if metrics is not None:
        metrics.close()
        observed = metrics.registry.get_sample_value(
            "finpipe_producer_receive_to_ack_seconds_count"
        )
        assert scrapes > 0 and observed, ("the metrics were not used", scrapes, observed)
    assert c.balanced() and c.delivered == trades, c.snapshot()
    assert c.first_frame_ts_ms is not None and c.last_delivery_ts_ms is not None
    seconds = (c.last_delivery_ts_ms - c.first_frame_ts_ms) / 1000
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(14)
    log_mb = sum(f.stat().st_size for f in log_dir.glob("seg-*.log")) / 1e6
    return {
        "trades": c.delivered,
        "seconds": seconds,
        "cpu": cpu,
        "log_mb": log_mb,
        "scrapes": scrapes,
    }


def run_without_log(trades: int, port: int, run_id: str) -> dict[str, float]:
    """The producer's loop without the receive log: receive, validate, produce, serve
    reports, all in one thread (what the producer did before the log)."""
    settings = load_settings(
        SIMULATOR_PORT=port,
        KAFKA_TOPIC=f"bench-nolog-{run_id}",
        KAFKA_DLQ_TOPIC=f"bench-nolog-dlq-{run_id}",
        FINPIPE_REPLAY_FILE="bench.jsonl",
    )
    ensure_topics(settings, [settings.kafka_topic, settings.kafka_dlq_topic])
    frames = FrameProcessor(settings.finnhub_tickers, "replay")
    delivered = 0

    def on_delivery(err: object, _msg: object) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1

    cpu_before = cpu_seconds()
    producer = Producer(producer_config(settings) | {"on_delivery": on_delivery})
    ws = open_feed(settings)
    produced, first, topic = 0, None, settings.kafka_topic
    while produced < trades:
        _, data = ws.recv_data()
        first = first or time.perf_counter()
        for key, value in frames.process(data).records:
            while True:  # librdkafka's queue is full: serve reports until there is room
                try:
                    producer.produce(topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
            produced += 1
        producer.poll(0)
    producer.flush(60)
    assert first is not None and delivered == trades, (delivered, trades)
    seconds = time.perf_counter() - first
    cpu = cpu_seconds() - cpu_before
    ws.close()
    return {"trades": delivered, "seconds": seconds, "cpu": cpu}


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


def _with_simulator(replay: Path, port: int, run: Callable[[], Any], *, loop: bool = False) -> Any:
    """``run()`` against a fresh simulator; adds the CPU seconds the simulator spent
    serving it (``sim_cpu``, without its start-up) to the result."""
    sim = start_simulator(replay, port, loop=loop)
    try:
        started = process_cpu_seconds(sim.pid)
        result = run()
        result["sim_cpu"] = process_cpu_seconds(sim.pid) - started
        return result
    finally:
        sim.terminate()
        sim.wait()


NO_LOG = "no log"
METRICS = " + metrics"
Config = tuple[int | None, bool]
"""(PRODUCER_LOG_FLUSH_MS, or None for the loop without the log; metrics on)."""


def _label(config: Config) -> str:
    window, metrics = config
    return NO_LOG if window is None else f"log {window} ms" + (METRICS if metrics else "")


def run_interleaved(
    args: argparse.Namespace, replay: Path, tmp: Path, run_id: str
) -> dict[str, list[dict[str, float]]]:
    """Every configuration once per repetition, the order rotated each time."""
    windows = args.flush_ms or [200]
    configs: list[Config] = [(None, False), *((w, False) for w in windows)]
    if not args.no_metrics:
        configs.append((windows[0], True))
    runs: dict[str, list[dict[str, float]]] = {_label(c): [] for c in configs}
    for rep in range(args.repeats):
        shift = rep % len(configs)
        for window, metrics in configs[shift:] + configs[:shift]:
            port = free_port()
            tag = f"{run_id}-{rep}-{window or 0}-{int(metrics)}"
            before = load1()
            scrape = args.scrape_seconds if metrics else None
            if window is None:
                result = _with_simulator(
                    replay, port, lambda at=port, t=tag: run_without_log(args.trades, at, t)
                )
            else:
                log_dir = tmp / f"log-{tag}"
                result = _with_simulator(
                    replay,
                    port,
                    lambda at=port, t=tag, w=window, d=log_dir, s=scrape: run_producer(
                        args.trades, at, t, w, d, args.profile, s
                    ),
                )
                shutil.rmtree(log_dir, ignore_errors=True)
            result |= {"rep": rep, "load_before": before, "load_after": load1()}
            result["rate"] = result["trades"] / result["seconds"]
            runs[_label((window, metrics))].append(result)
            print(
                f"  rep {rep + 1} {_label((window, metrics)):>22}: "
                f"{result['rate']:>9,.0f} trades/s, "
                f"{cpu_per_million(result):5.2f} CPU s/M trades (simulator "
                f"{result['sim_cpu'] / result['trades'] * 1e6:4.2f}), "
                f"load {before:4.1f} -> {result['load_after']:4.1f}",
                flush=True,
            )
    return runs


def cpu_per_million(result: dict[str, float]) -> float:
    return result["cpu"] / result["trades"] * 1e6


def summarize(runs: dict[str, list[dict[str, float]]]) -> None:
    """Median per configuration, and the median of per-repetition ratios to no log."""
    no_log = {r["rep"]: r["rate"] for r in runs[NO_LOG]}
    print(
        f"{'configuration':>22} | {'median trades/s':>15} | {'min..max':>19} | "
        f"{'on/off (median)':>15} | {'CPU s/M trades':>14} | load (1 min)"
    )
    for label, results in runs.items():
        rates = [r["rate"] for r in results]
        ratios = [r["rate"] / no_log[r["rep"]] for r in results]
        cpu = statistics.median(cpu_per_million(r) for r in results)
        loads = [r["load_before"] for r in results] + [r["load_after"] for r in results]
        print(
            f"{label:>22} | {statistics.median(rates):>15,.0f} | "
            f"{min(rates):>8,.0f}..{max(rates):>9,.0f} | "
            f"{statistics.median(ratios):>15.2f} | {cpu:>14.2f} | "
            f"{min(loads):.1f}..{max(loads):.1f}"
        )
    for label in [label for label in runs if label.endswith(METRICS)]:
        off = {r["rep"]: r["rate"] for r in runs[label.removesuffix(METRICS)]}
        ratios = sorted(r["rate"] / off[r["rep"]] for r in runs[label])
        scrapes = sum(int(r.get("scrapes", 0)) for r in runs[label])
        print(
            f"metrics on/off    : {statistics.median(ratios):.3f} median of per-repetition "
            f"ratios ({', '.join(f'{x:.3f}' for x in ratios)}; {label.removesuffix(METRICS)}, "
            f"{scrapes} scrapes)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--per-frame", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    parser.add_argument(
        "--flush-ms",
        type=int,
        action="append",
        help="PRODUCER_LOG_FLUSH_MS of a run with the log (repeatable; default 200)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the producer thread")
    parser.add_argument(
        "--no-metrics", action="store_true", help="skip the run with the producer's metrics on"
    )
    parser.add_argument(
        "--scrape-seconds",
        type=float,
        default=1.0,
        help="how often the metrics run is scraped (Prometheus's default is 15 s)",
    )
    parser.add_argument("--plot", help="write a throughput bar chart to this PNG")
    args = parser.parse_args()
    configure_logging("WARNING")
    run_id = uuid.uuid4().hex[:8]
    server = os.environ["KAFKA_SERVER"]
    print(f"machine: {machine()}")
    print(f"load average before: {' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min)")

    with tempfile.TemporaryDirectory() as tmp:
        replay = Path(tmp) / "bench.jsonl"
        write_session(replay, args.trades, args.per_frame)
        size_mb = replay.stat().st_size / 1e6
        print(f"replay file: {args.trades:,} trades, {args.per_frame}/frame, {size_mb:.0f} MB")
        rss_before = peak_rss_mb()
        runs = run_interleaved(args, replay, Path(tmp), run_id)
        rss = peak_rss_mb()
        port = free_port()
        naive = _with_simulator(
            replay,
            port,
            lambda: run_baseline(port, run_id, args.baseline_seconds, server),
            loop=True,
        )
    print(f"load average after: {' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1/5/15 min)")
    summarize(runs)
    print(f"peak RSS          : {rss:.0f} MB (process peak before the runs: {rss_before:.0f} MB)")
    print(
        f"naive baseline    : {naive['trades']:>10,.0f} trades in {naive['seconds']:6.2f} s "
        f"= {naive['rate']:>9,.0f} trades/s (produce + flush per trade)"
    )
    first_log = next(label for label in runs if label != NO_LOG and not label.endswith(METRICS))
    fast = {"rate": statistics.median(r["rate"] for r in runs[first_log])}
    print(f"ratio             : {fast['rate'] / naive['rate']:.0f}x ({first_log}, median)")
    if args.plot:
        plot(fast, naive, Path(args.plot))


def machine() -> str:
    """nproc, CPU model and RAM, from /proc."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{os.cpu_count()} CPUs, {model}, {mem_kb / 1024**2:.1f} GiB RAM"


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
