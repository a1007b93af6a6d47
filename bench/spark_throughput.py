"""Benchmark of ``finpipe-spark``: sustained throughput and end-to-end latency.

Runs the real job (a ``finpipe-spark`` subprocess) against the Kafka and MinIO named by
the settings, on its own topic, lake prefix and checkpoint. A producer process writes
``TradeRecord``s at a fixed rate with ``ingest_ts_ms`` = the moment it creates them (the
producer's receive time); a reader thread follows the lake table's Delta log and reads the
``ingest_ts`` of each new commit's files, so latency = the time of the commit that made
the row visible (the first moment any Delta reader can see it) - ingest time.

Keeping up means: every batch's duration below the trigger (p95 reported) and the lag
(produced - committed) not growing over the run.

    .venv/bin/python bench/spark_throughput.py --rate 20000 --duration 600

Prints a JSON summary on stdout; progress lines on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from finpipe import lake, lake_log
from finpipe.contracts import TradeRecord
from finpipe.settings import DEFAULT_TICKERS, Settings, load_settings
from infra import artifacts, services

JOB_BIN = Path(sys.executable).with_name("finpipe-spark")


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def bench_symbols(count: int) -> list[str]:
    """The default 7 tickers, or the first ``count`` of the simulator's 50 Finnhub
    spellings (crypto and stocks, ``BINANCE:BTCUSDT``, ``BRK.B`` ...)."""
    if count == len(DEFAULT_TICKERS):
        return list(DEFAULT_TICKERS)
    from producer.simulator.market import DEMO_50_TICKERS

    if not 1 <= count <= len(DEMO_50_TICKERS):
        raise SystemExit(f"--symbols must be 1..{len(DEMO_50_TICKERS)}, not {count}")
    return list(DEMO_50_TICKERS[:count])


def produce(
    settings: Settings,
    rate: int,
    duration: float,
    symbols: list[str],
    counter: Any,
    started: Any,
) -> None:
    """Producer process: ``rate`` trades/s over ``symbols`` in 100 slices per second."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_server,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "lz4",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 2_000_000,
        }
    )
    encoder = msgspec.json.Encoder()
    slice_s = 0.01
    begin = time.monotonic()
    started.value = time.time()
    sent = 0
    while (elapsed := time.monotonic() - begin) < duration:
        due = int(rate * elapsed) - sent
        now_ms = int(time.time() * 1000)
        for i in range(due):
            n = sent + i
            symbol = symbols[n % len(symbols)]
            record = TradeRecord(symbol, 100 + n % 97, 1.0 + n % 5, now_ms, None, now_ms, "replay")
            producer.produce(settings.kafka_topic, key=symbol, value=encoder.encode(record))
        sent += due
        counter.value = sent
        producer.poll(0)
        time.sleep(slice_s)
    producer.flush(60)
    counter.value = sent


class LakeWatcher(threading.Thread):
    """Follows the lake's Delta log every ``poll`` seconds; the latency of each row is
    from its receive time to the commit that made it visible."""

    def __init__(self, settings: Settings, poll: float) -> None:
        super().__init__(name="lake-watcher", daemon=True)
        self.settings = settings
        self.poll = poll
        self.version = -1
        self.latencies_ms: list[np.ndarray] = []
        self.rows = 0
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        fs = lake.s3_filesystem(self.settings)
        table = lake.trades_table(self.settings)
        # The warm-up's commits are not part of the measurement.
        snapshot = table.open()
        self.version = snapshot.version() if snapshot is not None else -1
        while not self.stop.is_set():
            try:
                self._read_new_commits(table, fs)
            except OSError as exc:  # a slow S3 answer on a loaded machine: retry, say so
                self.errors += 1
                say(f"lake watcher: {exc}")
            self.stop.wait(self.poll)

    def _read_new_commits(self, table: lake.LakeTable, fs: Any) -> None:
        snapshot = table.open()
        if snapshot is None or snapshot.version() <= self.version:
            return
        changes = lake_log.changes(table, self.version, snapshot.version())
        for add in changes.adds:
            read = pq.read_table(f"{self.settings.s3_bucket}/{table.key_prefix}/{add.path}",
                                 columns=["ingest_ts"], filesystem=fs)  # fmt: skip
            ingest_ms = pc.cast(read["ingest_ts"], "int64").to_numpy() / 1000
            self.latencies_ms.append(add.commit_ms - ingest_ms)
            self.rows += len(ingest_ms)
        self.version = changes.version

    def percentiles(self) -> dict[str, float]:
        if not self.latencies_ms:
            return {}
        values = np.concatenate(self.latencies_ms) / 1000
        p50, p95, p99, top = np.percentile(values, [50, 95, 99, 100])
        return {"p50_s": p50, "p95_s": p95, "p99_s": p99, "max_s": top, "rows": len(values)}


def stage_breakdown(ui_url: str | None) -> dict[str, Any]:
    """Where a batch's time goes, from the running job's Spark REST API: per micro-batch
    a *read* stage (Kafka fetch, parse, shuffle write; one task per Kafka partition) and
    a *write* stage (shuffle read, the lake objects' Parquet + PUTs). Wall time per
    stage (p50/p95), tasks, and the bytes the shuffle moved."""
    import urllib.request

    if not ui_url:
        return {}

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"{ui_url}/api/v1/{path}", timeout=30) as response:
            return json.load(response)

    try:
        app = get("applications")[0]["id"]
        stages = get(f"applications/{app}/stages?status=complete")
    except OSError as exc:
        say(f"no stage breakdown: {exc}")
        return {}

    def wall_s(stage: dict[str, Any]) -> float:
        def parse(text: str) -> dt.datetime:  # Spark's "2026-12-02T05:53:36.019GMT"
            return dt.datetime.strptime(text.removesuffix("GMT"), "%Y-%m-%dT%H:%M:%S.%f")

        return (parse(stage["completionTime"]) - parse(stage["submissionTime"])).total_seconds()

    kinds = {
        "read": [s for s in stages if s.get("shuffleWriteBytes", 0) > 0],
        "write": [s for s in stages if s.get("shuffleReadBytes", 0) > 0],
    }
    out: dict[str, Any] = {}
    for kind, found in kinds.items():
        walls = [wall_s(s) for s in found]
        if not walls:
            continue
        out[kind] = {
            "stages": len(found),
            "wall_p50_s": float(np.percentile(walls, 50)),
            "wall_p95_s": float(np.percentile(walls, 95)),
            "tasks_median": statistics.median(s["numTasks"] for s in found),
            "executor_run_s_mean": statistics.fmean(s["executorRunTime"] for s in found) / 1000,
            "shuffle_mb_mean": statistics.fmean(
                s.get("shuffleWriteBytes", 0) + s.get("shuffleReadBytes", 0) for s in found
            )
            / 1e6,
        }
    return out


def committed_batches(log_path: Path) -> list[dict[str, Any]]:
    batches = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"spark_batch_committed"' in line:
            batches.append(json.loads(line))
    return batches


def run(args: argparse.Namespace) -> dict[str, Any]:
    name = f"bench-spark-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    settings = load_settings(
        KAFKA_TOPIC=name,
        LAKE_PREFIX=f"bench/{name}",
        SPARK_CHECKPOINT_DIR=work / "checkpoint",
        SPARK_TRIGGER_SECONDS=args.trigger,
        FINPIPE_HOME=work / "home",
    )
    services.ensure_topics(settings, [name])
    env = {
        **os.environ,
        "FINPIPE_HOME": str(settings.home),
        "KAFKA_TOPIC": name,
        "LAKE_PREFIX": settings.lake_prefix,
        "SPARK_CHECKPOINT_DIR": str(settings.checkpoint_dir),
        "SPARK_TRIGGER_SECONDS": str(args.trigger),
        **({"SPARK_WRITE_THREADS": str(args.write_threads)} if args.write_threads else {}),
        "SPARK_JARS": os.environ.get("SPARK_JARS")
        or str(artifacts.spark_jars_folder(settings.cache_dir)),
    }
    log_path = work / "spark.log"
    say(f"topic {name}, lake s3://{settings.s3_bucket}/{settings.lake_prefix}, log {log_path}")
    with log_path.open("wb") as log:
        job = subprocess.Popen(
            [str(JOB_BIN)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        return _measure(args, settings, job, log_path)
    finally:
        if job.poll() is None:
            job.send_signal(signal.SIGTERM)
            job.wait(120)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _wait_running(settings: Settings, job: subprocess.Popen[bytes]) -> None:
    from finpipe.health import read_health

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        beat = read_health(settings, "spark") or {}
        if beat.get("pid") == job.pid and beat.get("status") == "running":
            return
        if job.poll() is not None:
            raise SystemExit(f"finpipe-spark exited with {job.returncode}")
        time.sleep(0.5)
    raise SystemExit("finpipe-spark did not start in 180 s")


def _warm_up(
    settings: Settings, job: subprocess.Popen[bytes], symbols: list[str], records: int = 700
) -> None:
    """One small batch first, so Python workers and S3 clients exist before measuring.

    Their start-up is a one-time cost of a (re)started job, reported by the tests' logs,
    not a property of the sustained rate.
    """
    from confluent_kafka import Producer

    from finpipe.health import read_health

    producer = Producer({"bootstrap.servers": settings.kafka_server, "acks": "all"})
    now_ms = int(time.time() * 1000)
    for n in range(records):
        symbol = symbols[n % len(symbols)]
        record = TradeRecord(symbol, 100.0, 1.0, now_ms, None, now_ms, "replay")
        producer.produce(settings.kafka_topic, key=symbol, value=msgspec.json.encode(record))
    producer.flush(30)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if int((read_health(settings, "spark") or {}).get("total_rows", 0)) >= records:
            return
        time.sleep(0.5)
    raise SystemExit("the warm-up batch was not committed in 300 s")


def _measure(
    args: argparse.Namespace, settings: Settings, job: subprocess.Popen[bytes], log_path: Path
) -> dict[str, Any]:
    from finpipe.health import read_health

    symbols = bench_symbols(args.symbols)
    _wait_running(settings, job)
    _warm_up(settings, job, symbols)
    say("job running and warm; producing")
    warm_rows = int((read_health(settings, "spark") or {}).get("total_rows", 0))
    load_before = os.getloadavg()
    counter = mp.Value("q", 0)
    started = mp.Value("d", 0.0)
    producer = mp.Process(
        target=produce,
        args=(settings, args.rate, args.duration, symbols, counter, started),
        daemon=True,
    )
    watcher = LakeWatcher(settings, args.poll)
    watcher.start()
    time.sleep(1)  # its baseline listing is done before the first measured trade
    producer.start()
    lag_samples: list[tuple[float, int]] = []
    begin = time.monotonic()
    while producer.is_alive():
        time.sleep(5)
        beat = read_health(settings, "spark") or {}
        lag = counter.value - (int(beat.get("total_rows", 0)) - warm_rows)
        lag_samples.append((time.monotonic() - begin, lag))
        say(f"t={time.monotonic() - begin:5.0f}s produced={counter.value} lag={lag}")
    producer.join()
    produced = counter.value
    drain_begin = time.monotonic()
    while time.monotonic() - drain_begin < args.drain:
        beat = read_health(settings, "spark") or {}
        if int(beat.get("total_rows", 0)) - warm_rows >= produced and watcher.rows >= produced:
            break
        time.sleep(0.5)
    drained_after = time.monotonic() - drain_begin
    watcher.stop.set()
    watcher.join(30)
    beat = read_health(settings, "spark") or {}
    stages = stage_breakdown(beat.get("spark_ui_url"))
    batches = committed_batches(log_path)
    steady = [b for b in batches if b["rows"] > 0][1 + args.skip_batches :]  # 1: warm-up
    durations = [b["batch_duration_ms"] / 1000 for b in steady]
    thirds = max(1, len(lag_samples) // 3)
    if args.plot:
        _plot(args, lag_samples, steady, watcher.latencies_ms)
    return {
        "rate_target": args.rate,
        "duration_s": args.duration,
        "trigger_s": args.trigger,
        "symbols": len(symbols),
        "kafka_partitions": settings.kafka_partitions,
        "produced": produced,
        "produced_rate": produced / args.duration,
        "committed_rows": int(beat.get("total_rows", 0)) - warm_rows,
        "lake_rows_seen_by_reader": watcher.rows,
        "reader_errors": watcher.errors,
        "drained_after_s": round(drained_after, 1),
        "batches": len(steady),
        "rows_per_batch_mean": statistics.fmean(b["rows"] for b in steady) if steady else 0,
        "batch_duration_s": {
            "p50": float(np.percentile(durations, 50)) if durations else None,
            "p95": float(np.percentile(durations, 95)) if durations else None,
            "max": max(durations) if durations else None,
        },
        "lag_records": {
            "first_third_mean": statistics.fmean(lag for _, lag in lag_samples[:thirds]),
            "last_third_mean": statistics.fmean(lag for _, lag in lag_samples[-thirds:]),
            "max": max(lag for _, lag in lag_samples),
        },
        "latency": watcher.percentiles(),
        "stages": stages,
        # The machine is shared: its load says how much of the 2 cores the job really had.
        "loadavg_1m_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
        "cpus": os.cpu_count(),
    }


def _plot(
    args: argparse.Namespace,
    lag_samples: list[tuple[float, int]],
    batches: list[dict[str, Any]],
    latencies_ms: list[np.ndarray],
) -> None:
    """Lag over time, batch durations against the trigger, and the latency distribution."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    from plots import save_png  # bench/plots.py, beside this script

    figure = make_subplots(
        rows=3,
        cols=1,
        subplot_titles=(
            f"lag (produced - committed records) at {args.rate:,} trades/s, {args.symbols} symbols",
            "micro-batch duration (s) vs the trigger",
            "end-to-end latency: producer receive → visible in the lake (s)",
        ),
        vertical_spacing=0.1,
    )
    figure.add_trace(
        go.Scatter(x=[t for t, _ in lag_samples], y=[lag for _, lag in lag_samples], name="lag"),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Bar(y=[b["batch_duration_ms"] / 1000 for b in batches], name="batch duration"),
        row=2,
        col=1,
    )
    figure.add_hline(y=args.trigger, line_dash="dash", row=2, col=1)
    if latencies_ms:
        figure.add_trace(
            go.Histogram(x=np.concatenate(latencies_ms) / 1000, nbinsx=60, name="latency"),
            row=3,
            col=1,
        )
    figure.update_xaxes(title_text="seconds since production started", row=1, col=1)
    figure.update_xaxes(title_text="batch", row=2, col=1)
    figure.update_layout(showlegend=False)
    say(f"plot written to {save_png(figure, Path(args.plot))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=20_000, help="trades per second")
    parser.add_argument("--duration", type=float, default=600, help="seconds of production")
    parser.add_argument("--trigger", type=float, default=5.0, help="SPARK_TRIGGER_SECONDS")
    parser.add_argument(
        "--symbols", type=int, default=len(DEFAULT_TICKERS), help="symbols traded (max 50)"
    )
    parser.add_argument("--poll", type=float, default=0.5, help="lake reader's listing period")
    parser.add_argument("--drain", type=float, default=120, help="max seconds to drain")
    parser.add_argument(
        "--skip-batches", type=int, default=0, help="first measured batches left out"
    )
    parser.add_argument("--keep", action="store_true", help="keep checkpoint and logs")
    parser.add_argument("--plot", help="write lag, batch-duration and latency plots to this PNG")
    parser.add_argument(
        "--write-threads", type=int, help="SPARK_WRITE_THREADS of the job (default: the setting's)"
    )
    parser.add_argument(
        "--baseline-write-threads",
        type=int,
        help="first run the same load with this SPARK_WRITE_THREADS, then print the ratios",
    )
    args = parser.parse_args()
    if args.baseline_write_threads is None:
        print(json.dumps(run(args), indent=1, default=float))
        return
    plot = args.plot
    args.plot, current_threads = None, args.write_threads
    args.write_threads = args.baseline_write_threads
    say(f"baseline run: SPARK_WRITE_THREADS={args.write_threads}")
    baseline = run(args)
    args.plot, args.write_threads = plot, current_threads
    say(f"current run: SPARK_WRITE_THREADS={args.write_threads or 'default'}")
    current = run(args)
    print(json.dumps(compare(baseline, current, args), indent=1, default=float))


def compare(baseline: dict[str, Any], current: dict[str, Any], args: Any) -> dict[str, Any]:
    """Both runs' summaries and current / baseline of the figures the targets name."""

    def ratio(*path: str) -> float | None:
        old, new = baseline, current
        for key in path:
            old, new = (old or {}).get(key), (new or {}).get(key)
        return round(new / old, 3) if old and new is not None else None

    return {
        "baseline_write_threads": args.baseline_write_threads,
        "baseline": baseline,
        "current": current,
        "current_over_baseline": {
            "batch_p50": ratio("batch_duration_s", "p50"),
            "batch_p95": ratio("batch_duration_s", "p95"),
            "latency_p50": ratio("latency", "p50_s"),
            "latency_p99": ratio("latency", "p99_s"),
            "write_stage_p50": ratio("stages", "write", "wall_p50_s"),
        },
    }


if __name__ == "__main__":
    main()
