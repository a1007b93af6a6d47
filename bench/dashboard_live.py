"""How old the newest price on the dashboard is, in a real browser: the live layer (Kafka)
against the lake path, in the same run.

Runs the platform's own processes on a topic, lake prefix, checkpoint and receive log of
their own: ``finpipe-simulator`` (50 symbols, ``--rate`` trades/s each), ``finpipe-producer``
and ``finpipe-spark``; then ``finpipe-dashboard`` once per live refresh interval asked for
(``--live-refresh``, DASHBOARD_LIVE_REFRESH_SECONDS) and push interval (``--push``,
DASHBOARD_LIVE_PUSH_SECONDS, 0 for none) and once on the lake path (its
KAFKA_SERVER is a closed port: the page's fallback, the lake's tail every
DASHBOARD_REFRESH_SECONDS). Headless Chromium opens each page at 1,280 px; a script in the
page reads the heatmap's ``data-newest-received-ms`` (the producer's receive time of the
newest trade the page shows, ``streamlit_app/charts.py``) and measures its age with the
browser's clock, the one the producer stamps with on this machine:

* **when shown**: each time the page shows a newer trade, its age at that moment (a
  MutationObserver; how late a trade reaches the screen);
* **at any moment**: every 100 ms, the age of the newest trade on screen (what a glance
  sees; between two refreshes or pushes it grows by their interval);
* **pushed, on arrival**: for a page with the push, the server's stream read beside the
  browser (``/api/live-prices``): per event, the age of its newest trade when it arrives.
  What the page adds to it is the browser's share.

After a warm-up (Spark's first batches, every page live or on the lake) the samples of
``--duration`` seconds are kept. The pages are open all at once, or with ``--apart`` one
after the other, each alone in the browser for its warm-up and duration (a user has one
page open; on two cores every other open page's renderer competes with it). Also
printed: the trade rate (the topic's offsets), each dashboard's CPU, the load average,
and each page's long tasks (the share of the time its main thread was in a task over
50 ms, when nothing is drawn, and the longest).

    S3_ENDPOINT_URL=http://127.0.0.1:19000 KAFKA_SERVER=localhost:19092 FINPIPE_ENV_FILE= \\
        .venv/bin/python bench/dashboard_live.py --duration 300 [--push 0.25 --push 0]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from dashboard_queries import load
from lake_seed import cleanup
from playwright.sync_api import Page, sync_playwright

from finpipe.health import read_health
from finpipe.settings import Settings, load_settings
from infra import artifacts
from infra.stack import CHROMIUM_ARGS, ensure_chromium
from producer.simulator.market import DEMO_50_TICKERS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LAKE_PATH = "lake path"
# Pages measured side by side stay "visible": no background throttling of their timers
# (Streamlit's fragment refresh is a timer in the page).
BROWSER_ARGS = (
    *CHROMIUM_ARGS,
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
)
SAMPLER = """() => {
    const s = window.__ages = {shown: [], glance: [], long: [], last: null};
    // the main thread's long tasks (over 50 ms): while one runs, nothing is drawn
    new PerformanceObserver(list => {
        for (const e of list.getEntries()) s.long.push(e.duration);
    }).observe({type: 'longtask'});
    const read = () => {
        const grid = document.querySelector('.finpipe-heatmap');
        const ms = grid ? Number(grid.dataset.newestReceivedMs) : 0;
        return ms ? [ms, grid.dataset.source] : [null, null];
    };
    new MutationObserver(() => {
        const [ms, source] = read();
        if (ms && ms !== s.last) { s.last = ms; s.shown.push([Date.now() - ms, source]); }
    }).observe(document.body, {subtree: true, childList: true, attributes: true,
                               attributeFilter: ['data-newest-received-ms']});
    setInterval(() => {
        const [ms, source] = read();
        if (ms) s.glance.push([Date.now() - ms, source]);
    }, 100);
}"""
TAKE = """() => { const s = window.__ages; const out = {shown: s.shown, glance: s.glance,
    long: s.long, visible: document.visibilityState}; s.shown = []; s.glance = []; s.long = [];
    return out; }"""


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def started(
    name: str, argv: list[str], env: dict[str, str], logs: Path
) -> Iterator[subprocess.Popen[bytes]]:
    log = (logs / f"{name.replace(' ', '-')}.log").open("wb")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def wait(what: str, probe: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except KafkaException:  # a topic just created has no partition leader yet
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class StreamAges:
    """The push's stream as a page receives it (``streamlit_app/push.py``), read beside the
    browser: per event, the age of its newest trade when it arrived here. Against the
    page's own ages it tells the server's share from the browser's."""

    def __init__(self, url: str) -> None:
        self.url = f"{url}/api/live-prices"
        self.ages: list[float] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError), urllib.request.urlopen(self.url) as stream:
            for line in stream:
                if line.startswith(b"data: "):
                    newest = max(u["r"] for u in json.loads(line[6:]))
                    with self._lock:
                        self.ages.append(time.time() * 1000 - newest)

    def take(self) -> list[float]:
        with self._lock:
            taken, self.ages = self.ages, []
        return taken


def topic_end(settings: Settings) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka_server, "group.id": "bench-probe"})
    try:
        topic = settings.kafka_topic
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def percentiles(ages_ms: list[float]) -> dict[str, float]:
    if not ages_ms:
        return {}
    p50, p95, p99, top = np.percentile(np.array(ages_ms) / 1000, [50, 95, 99, 100])
    return {"p50_s": p50, "p95_s": p95, "p99_s": p99, "max_s": top, "samples": len(ages_ms)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = load_settings()
    name = f"bench-live-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    symbols = list(DEMO_50_TICKERS)
    names = {
        "FINPIPE_ENV_FILE": "",
        "FINPIPE_HOME": str(work / "home"),
        "FINNHUB_TICKERS": ",".join(symbols),
        "FINNHUB_API_TOKEN": "",
        "SIMULATOR_PORT": str(closed_port()),
        "KAFKA_TOPIC": name,
        "KAFKA_DLQ_TOPIC": f"{name}-dlq",
        "LAKE_PREFIX": f"{name}/processed_trades",
        "SUMMARIES_PREFIX": f"{name}/summaries",
        "SPARK_CHECKPOINT_DIR": str(work / "checkpoint"),
        "PRODUCER_LOG_DIR": str(work / "producer-log"),
        "SPARK_UI_PORT": str(closed_port()),
        # no metrics endpoints: the platform's own processes serve them on these ports
        "PRODUCER_METRICS_PORT": "0",
        "SPARK_METRICS_PORT": "0",
        "SPARK_JARS": os.environ.get("SPARK_JARS")
        or str(artifacts.spark_jars_folder(base.cache_dir)),
    }
    env = {**os.environ, **names}
    settings = load_settings(**{k: v for k, v in names.items() if k != "FINPIPE_ENV_FILE"})
    say(f"{name}: work {work}; {load()}")
    pages = [
        (
            f"live, refresh {r:g} s, " + (f"push {p:g} s" if p else "no push"),
            {"DASHBOARD_LIVE_REFRESH_SECONDS": str(r), "DASHBOARD_LIVE_PUSH_SECONDS": str(p)},
        )
        for r in args.live_refresh
        for p in args.push
    ]
    pages.append((LAKE_PATH, {"KAFKA_SERVER": f"127.0.0.1:{closed_port()}"}))
    with contextlib.ExitStack() as stack:
        stack.callback(cleanup, settings, name)
        for data in ("home", "checkpoint", "producer-log"):  # the processes' logs stay
            stack.callback(shutil.rmtree, work / data, ignore_errors=True)
        stack.callback(
            lambda: AdminClient({"bootstrap.servers": base.kafka_server}).delete_topics(
                [name, f"{name}-dlq"]
            )
        )
        simulator = [
            str(BIN / "finpipe-simulator"),
            *("--rate", str(args.rate), "--tick", str(args.tick), "--seed", "1"),
            "--ignore-market-hours",
        ]
        stack.enter_context(started("simulator", simulator, env, work))
        stack.enter_context(started("producer", [str(BIN / "finpipe-producer")], env, work))
        wait("the producer's first deliveries", lambda: topic_end(settings) > 0, 120)
        stack.enter_context(started("spark", [str(BIN / "finpipe-spark")], env, work))
        wait(
            "Spark's first batch",
            lambda: (read_health(settings, "spark") or {}).get("total_rows", 0) > 0,
            300,
        )
        say(f"producer and Spark running; {load()}")
        dashboards: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        for label, extra in pages:
            port = closed_port()
            argv = [str(BIN / "finpipe-dashboard"), "--server.address", "127.0.0.1"]
            proc = stack.enter_context(
                started(label, [*argv, "--server.port", str(port)], {**env, **extra}, work)
            )
            dashboards[label] = (f"http://127.0.0.1:{port}", proc)
        for label, (url, _) in dashboards.items():
            wait(f"the dashboard ({label})", lambda url=url: healthy(url), 120)
        return measure(args, settings, dashboards, work)


def measure(
    args: argparse.Namespace,
    settings: Settings,
    dashboards: dict[str, tuple[str, subprocess.Popen[bytes]]],
    work: Path,
) -> dict[str, Any]:
    """Every page at once, or with ``--apart`` one after the other (the others' servers
    running, their pages closed): a user has one page open, and on two cores each open
    page's renderer takes CPU from the others."""
    groups = [[label] for label in dashboards] if args.apart else [list(dashboards)]
    phases = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=ensure_chromium(), args=list(BROWSER_ARGS), headless=True
        )
        for labels in groups:
            phases.append(sample(args, settings, {k: dashboards[k] for k in labels}, browser))
        browser.close()
    result: dict[str, Any] = {
        "pages measured": "one at a time" if args.apart else "all at once",
        "duration_s": round(sum(p["seconds"] for p in phases) / len(phases), 1),
        "trades_per_second": round(min(p["rate"] for p in phases), 1),
        "symbols": len(DEMO_50_TICKERS),
        "load_before": phases[0]["load_before"],
        "load_after": load(),
        "page_visibility": sorted(set().union(*(p["visible"] for p in phases))),
        "logs": str(work),
        "pages": {},
    }
    for phase in phases:
        for label, kinds in phase["samples"].items():
            sources = sorted({source for _, source in kinds["glance"]})
            result["pages"][label] = {
                "when shown": percentiles([age for age, _ in kinds["shown"]]),
                "at any moment": percentiles([age for age, _ in kinds["glance"]]),
                "pushed, on arrival": percentiles(phase["streams"].get(label, [])),
                # the browser's main thread: share of the time in long tasks, the longest
                "long tasks (share, max s)": (
                    round(sum(kinds["long"]) / 1000 / phase["seconds"], 3),
                    round(max(kinds["long"], default=0) / 1000, 3),
                ),
                "sources seen": sources,
                "dashboard cpu (cores)": round(phase["cpu"][label], 3),
                "load during": f"{phase['load_before']} -> {phase['load_after']}",
            }
    return result


def sample(
    args: argparse.Namespace,
    settings: Settings,
    dashboards: dict[str, tuple[str, subprocess.Popen[bytes]]],
    browser: Any,
) -> dict[str, Any]:
    """Opens the pages of ``dashboards``, warms up, samples them for ``--duration``."""
    pages: dict[str, Page] = {}
    for label, (url, _) in dashboards.items():
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_selector(".finpipe-heatmap[data-newest-received-ms]", timeout=120_000)
        page.evaluate(SAMPLER)
        pages[label] = page
    streams = {
        label: StreamAges(url)
        for label, (url, _) in dashboards.items()
        if label != LAKE_PATH and "no push" not in label
    }
    say(f"{', '.join(pages)}: open; warming up for {args.warm_up:.0f} s")
    time.sleep(args.warm_up)
    for page in pages.values():
        page.evaluate(TAKE)  # the warm-up's samples go
    for stream in streams.values():
        stream.take()
    cpu = {label: cpu_seconds(proc.pid) for label, (_, proc) in dashboards.items()}
    load_before, end_before, began = load(), topic_end(settings), time.monotonic()
    samples: dict[str, dict[str, list[Any]]] = {
        k: {"shown": [], "glance": [], "long": []} for k in pages
    }
    visible: set[str] = set()
    while (elapsed := time.monotonic() - began) < args.duration:
        time.sleep(min(30.0, args.duration - elapsed))
        for label, page in pages.items():
            taken = page.evaluate(TAKE)
            visible.add(taken["visible"])
            for kind in ("shown", "glance", "long"):
                samples[label][kind] += taken[kind]
        say(f"t={time.monotonic() - began:4.0f} s; {load()}")
    seconds = time.monotonic() - began
    rate = (topic_end(settings) - end_before) / seconds
    for label, (_, proc) in dashboards.items():
        cpu[label] = (cpu_seconds(proc.pid) - cpu[label]) / seconds
    for page in pages.values():
        page.close()
    return {
        "samples": samples,
        "streams": {label: stream.take() for label, stream in streams.items()},
        "cpu": cpu,
        "seconds": seconds,
        "rate": rate,
        "load_before": load_before,
        "load_after": load(),
        "visible": visible,
    }


def report(result: dict[str, Any]) -> None:
    print(
        f"{result['symbols']} symbols, {result['trades_per_second']:,.0f} trades/s into Kafka, "
        f"{result['duration_s']:.0f} s measured per page, pages {result['pages measured']}; "
        f"{result['load_before']} -> {result['load_after']}"
    )
    quantiles = "p50 / p95 / p99 / max (s)"
    print(
        f"| page | age when shown {quantiles} | at any moment {quantiles} "
        f"| pushed, on arrival {quantiles} | dashboard CPU |"
    )
    print("|---|---:|---:|---:|---:|")
    for label, page in result["pages"].items():
        cells = []
        for kind in ("when shown", "at any moment", "pushed, on arrival"):
            p = page[kind]
            cells.append(
                f"{p['p50_s']:.2f} / {p['p95_s']:.2f} / {p['p99_s']:.2f} / {p['max_s']:.2f} "
                f"({p['samples']:,})"
                if p
                else "—"
            )
        cpu = page["dashboard cpu (cores)"]
        share, longest = page["long tasks (share, max s)"]
        label = f"{label}; main thread in long tasks {share:.0%}, longest {longest:.2f} s"
        if result["pages measured"] == "one at a time":
            label += f"; {page['load during']}"
        print(f"| {label} ({', '.join(page['sources seen'])}) | {' | '.join(cells)} | {cpu:.2f} |")
    live = [p for label, p in result["pages"].items() if label != LAKE_PATH]
    lake = result["pages"].get(LAKE_PATH, {})
    for kind in ("when shown", "at any moment"):
        if live and lake.get(kind) and live[0][kind]:
            ratio = lake[kind]["p99_s"] / live[0][kind]["p99_s"]
            print(f"lake path / live (first page) p99 {kind}: {ratio:.1f}x")
    print(json.dumps(result, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds measured")
    parser.add_argument("--warm-up", type=float, default=60.0, help="seconds before measuring")
    parser.add_argument("--rate", type=float, default=40.0, help="trades/s per symbol (50)")
    parser.add_argument("--tick", type=float, default=0.2, help="simulator's frame interval")
    parser.add_argument(
        "--live-refresh",
        type=float,
        action="append",
        help="a live dashboard refreshing every this many seconds (repeatable; default 1)",
    )
    parser.add_argument(
        "--push",
        type=float,
        action="append",
        help="with each refresh, a dashboard pushing prices every this many seconds "
        "(DASHBOARD_LIVE_PUSH_SECONDS; 0: none, the fragment alone; repeatable; "
        "default 0.25)",
    )
    parser.add_argument(
        "--apart",
        action="store_true",
        help="measure the pages one after the other, each alone in the browser "
        "(default: all at once)",
    )
    args = parser.parse_args(argv)
    args.live_refresh = args.live_refresh or [1.0]
    args.push = args.push or [0.25]
    report(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
