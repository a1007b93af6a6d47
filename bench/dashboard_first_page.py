"""The dashboard's first page in a new Streamlit process, in a real browser, at the end of a
50-symbol day in the Delta lake.

Seeds the day as ``dashboard_queries.py --fifty`` does (``bench/lake_seed.py``): a
24-hour day of ``--trades`` trades ending now in the 50 symbols of the simulator's demo
list, the last ``--replay-minutes`` committed as 5 s micro-batches through the sink's code
with a maintenance run every 60 batches (the last one ``--recent-batches`` batches before
the newest), the hours before fast-forwarded and maintained (yesterday z-ordered, today
compacted); the summaries published. Then for each load: the pipeline *catches up* (the
micro-batches of the seconds since the newest commit, up to now, committed the same way,
with the maintenance on the same cadence: the rows are the day's own of 24 h before,
moved forward a day), starts a new dashboard process on the table, opens the page in
headless Chromium and times from the navigation to two milestones: the first view (the
header's five metrics, the markets heatmap and the markets table: what the page is
opened for) and the whole first run (also the Plotly charts, the other tables and the
"Updated" line the run writes last); then the same page once more in that process ("the
page again": store and imports warm, so what is left is mostly the browser's).

The launcher's process is measured twice per load: the page opened the moment the server
answers (the worst case), and opened once the process has logged the end of its store
warm-up ("launcher, warm": a dashboard that has been up for a few seconds when its first
user comes; the same moment since the server waits for the warm-up). Each variant also
reports the time from the process's start to its first view (process up + first view):
what a user who opens the page while the dashboard starts waits in all.

The page is opened at 23:59 of the seeded day (``--at HH:MM``; ``--at now`` for the
moment the benchmark runs): the day is the 24 hours up to the last such moment, and every
dashboard process starts with its clock set to it (time-machine, ticking from there; the
clock of the benchmark's seeding and catch-up is the same moment, so the catch-up has
nothing to commit and every load sees the lake as it is then). Without it the page's
"today" (the heatmap's and the markets' session, the sparklines' 1-minute closes) held
only the minutes since midnight UTC of whenever the benchmark ran: at 00:38 UTC, 38 of
each symbol's 1,440.

``--baseline-rev REV`` also starts the launcher of the project as of git revision REV
(from a copy of that revision's files, ``git archive``), same run, interleaved: the cost
of a change to the page, under the same load. The revision must read the day this script
seeds, so it must be one whose dashboard reads the Delta lake and the summaries as Delta
tables (``DELTA_DASHBOARD`` or a later one; refused otherwise): a revision of the layout
before, such as ``7b34cf7``, would need its own seeding of the old layout, which this
script no longer has.

``--baseline-plain`` starts the process the way it was started before the launcher
(``streamlit run streamlit_app/app.py``: the page's libraries import on the first page),
in turn with ``finpipe-dashboard``, same run, and prints the ratio; ``--baseline-imports``
the launcher as it was before its warm-up (the page's imports only);
``--baseline-sequential`` the launcher as it was before its server waited for the store's
first snapshot (the snapshot started after the imports and the warm-up, in a thread
beside the server).

What changed with the Delta lake (the measurement, milestones, variants and flags stay,
``--replay-minutes`` is new): the day was the rolling-compacted layout of objects, whose
young objects were PUT again before each load (the old tail told young from old by the
objects' LastModified, so the window was 1 minute and the bench waited it out). The
tail now picks the table's files by the ``trade_ts`` bounds in the log, so the window is
``DASHBOARD_TAIL_MINUTES`` as configured (15 minutes by default; ``--replay-minutes``
must cover it), and what a new process reads is what the writer and the maintenance
leave: the open day's compacted files that reach the window and the micro-batch files
committed since the last maintenance run. That count moves between loads as the
pipeline catches up (one batch per 5 s, a maintenance run every 60 batches): each load
prints it, with the store warm-up's duration and the number of files its tail read, as
the process logged them.

Usage (against the test MinIO that ``make test`` starts, kept with
``FINPIPE_KEEP_SERVICES=1``):

    S3_ENDPOINT_URL=http://127.0.0.1:19000 FINPIPE_ENV_FILE= .venv/bin/python \\
        bench/dashboard_first_page.py --baseline-plain --baseline-imports
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dashboard_queries import build_summaries, generate, load, seed_lake, seeded
from lake_seed import MAINTENANCE_EVERY, TRIGGER_S, Seeder, cleanup
from playwright.sync_api import Page, sync_playwright

from finpipe import contracts
from finpipe.settings import load_settings
from infra.stack import CHROMIUM_ARGS, ensure_chromium
from producer.simulator.market import DEMO_50_TICKERS
from streamlit_app.charts import HEATMAP_CELLS, MARKETS_ROWS

ROOT = Path(__file__).resolve().parents[1]
DAY_BATCHES = 86_400 // TRIGGER_S
# The first revision whose dashboard reads the day seeded here: the lake's tail follows the
# Delta log, the summaries are Delta tables. --baseline-rev takes it or its descendants.
DELTA_DASHBOARD = "2aec21b"
# the first view: the header's five metrics, the heatmap and the markets table. The table
# is HTML (its rows are there as soon as it arrives); a --baseline-rev revision before it
# drew an st.dataframe, there when its canvas is. The page's other grids (tape, daily
# statistics) come after the markets in the same run and draw a second later, so a canvas
# never stands in for the HTML table of this revision.
FIRST_VIEW = f"""() => document.querySelectorAll('[data-testid="stMetric"]').length >= 5
    && document.querySelectorAll('{HEATMAP_CELLS}').length > 0
    && (document.querySelectorAll('{MARKETS_ROWS}').length > 0
        || document.querySelectorAll('[data-testid="stDataFrame"] canvas').length >= 1)"""
# the whole first run: also the charts, the "Updated" line and the grids (two: tape and
# daily statistics; three in a revision whose markets table was a grid too)
DRAWN = f"""() => {{
    const plots = [...document.querySelectorAll('.js-plotly-plot')];
    const has = type => plots.some(p => (p.data || []).some(t => t.type === type));
    const text = document.body.innerText;
    const grids = document.querySelectorAll('{MARKETS_ROWS}').length > 0 ? 2 : 3;
    return has('candlestick') && has('scatter') && /Updated \\d\\d:\\d\\d:\\d\\d UTC/.test(text)
        && document.querySelectorAll('[data-testid="stDataFrame"]').length >= grids;
}}"""


# Runs ``-m MODULE ARGS`` or ``-c CODE ARGS`` with the clock set to the epoch seconds given
# first, ticking from there (the dashboard reads the time only through Python's clocks).
CLOCKED = """
import runpy, sys, time_machine
time_machine.travel(float(sys.argv[1]), tick=True).start()
kind, what, *rest = sys.argv[2:]
if kind == "-m":
    sys.argv = [what, *rest]
    runpy.run_module(what, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c", *rest]
    exec(compile(what, "<string>", "exec"), {"__name__": "__main__"})
"""
WARM = "launcher, warm"  # the page opened once the launcher's warm-up has ended
# the launcher before its warm-up (streamlit_app/serve.py): imports, then streamlit run
IMPORTS_ONLY = """
import sys
import streamlit_app.analytics, streamlit_app.charts, streamlit_app.status
import streamlit_app.store, streamlit_app.windows
from streamlit.web import cli
sys.argv = ["streamlit", "run", "streamlit_app/app.py", *sys.argv[1:]]
cli.main(prog_name="streamlit")
"""
SEQUENTIAL = "server not waiting"
# the launcher before its server waited for the store: imports, warm-up, freeze, then the
# store's first snapshot in a thread beside the server
STORE_AFTER_WARM_UP = """
import gc, sys, threading
from streamlit_app import serve
serve.warm_up()
gc.freeze()
threading.Thread(target=serve.warm_store, daemon=True).start()
from streamlit.web import cli
sys.argv = ["streamlit", "run", "streamlit_app/app.py", *sys.argv[1:]]
cli.main(prog_name="streamlit")
"""


def reads_delta_day(rev: str) -> bool:
    """Whether the dashboard of ``rev`` reads the Delta lake (``DELTA_DASHBOARD`` is in its
    history); an unknown revision ends the script."""
    known = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        cwd=ROOT,
        check=False,
        capture_output=True,
    )
    if known.returncode != 0:
        raise SystemExit(f"--baseline-rev: no such revision: {rev}")
    ancestor = subprocess.run(
        ["git", "merge-base", "--is-ancestor", DELTA_DASHBOARD, rev], cwd=ROOT, check=False
    )
    return ancestor.returncode == 0


def export_revision(rev: str) -> Path:
    """The project's files as of ``rev``, in a new temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix=f"first-page-{rev}-"))
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def opening_moment(at: str, now: dt.datetime) -> dt.datetime | None:
    """The last moment at ``at`` (UTC ``HH:MM``) by ``now``, or None for ``now``."""
    if at == "now":
        return None
    clock = dt.time.fromisoformat(at)
    moment = dt.datetime.combine(now.date(), clock, tzinfo=dt.UTC)
    return moment if moment <= now else moment - dt.timedelta(days=1)


def start(
    argv: list[str], env: dict[str, str], port: int, log: Path, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*argv, "--server.address", "127.0.0.1", "--server.port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> float:
    import urllib.request

    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the dashboard exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - began
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the dashboard did not answer on {url} within {timeout:.0f} s")


def wait_warm(log: Path, timeout: float = 90) -> None:
    """Until the launcher logs that its store warm-up ended (done or skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(r"dashboard\.(store_warm|warm_up_skipped)", log.read_text(errors="replace")):
            return
        time.sleep(0.1)
    raise SystemExit(f"no end of the warm-up in {log} within {timeout:.0f} s")


def first_page(page: Page, url: str) -> tuple[float, float]:
    """Seconds from the navigation to the first view, and to the whole first run drawn."""
    began = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function(FIRST_VIEW, timeout=120_000, polling=50)
    view = time.perf_counter() - began
    page.wait_for_function(DRAWN, timeout=120_000, polling=50)
    return view, time.perf_counter() - began


def warm_up(log: Path) -> str:
    """The store warm-up's duration and the files its tail read, as the launcher logged
    them ("-" where not logged)."""
    text = log.read_text(errors="replace")
    seconds = re.search(r"dashboard\.store_warm\b[^\n]*?\bseconds\W+([\d.]+)", text)
    files = re.search(r"lake_tail\.loaded\b[^\n]*?\bfiles\W+(\d+)", text)
    return (
        f"store warm-up {f'{float(seconds.group(1)):.2f} s' if seconds else '-'}"
        f" (tail's first read: {files.group(1) if files else '-'} files)"
    )


class Pipeline:
    """The streaming writer and the maintenance after the seeding: :meth:`catch_up` commits
    the micro-batches completed since the newest one, as ``seed_lake`` did (the rows of
    the seeded day 24 h earlier, moved forward a day, Kafka offsets past the day's), with
    a maintenance run after every batch id on the seeding's cadence."""

    def __init__(self, seeder: Seeder, day: pa.Table, recent_batches: int) -> None:
        self.seeder = seeder
        batch = day["processed_ts"].cast(pa.int64()).to_numpy() // (TRIGGER_S * 1_000_000)
        order = np.argsort(batch, kind="stable")
        self.rows = day.take(pa.array(order))
        self.batch = batch[order]
        self.offset = day.num_rows  # past every Kafka offset of the day
        self.last = seeder.delta.transaction_version(contracts.SPARK_APP_ID) or 0
        self.phase = (self.last - recent_batches) % MAINTENANCE_EVERY
        self.since_maintenance = recent_batches  # batch ids since the last run

    def catch_up(self, now: dt.datetime) -> tuple[int, float]:
        """Commits the batches completed by ``now``; returns how many and the seconds."""
        began, commits = time.perf_counter(), 0
        for batch_id in range(self.last + 1, int(now.timestamp()) // TRIGGER_S):
            lo, hi = np.searchsorted(
                self.batch, [batch_id - DAY_BATCHES, batch_id - DAY_BATCHES + 1]
            )
            if hi > lo:
                rows = self.rows.slice(int(lo), int(hi - lo))
                self.seeder.batch(self.moved(rows), batch_id)
                commits += 1
            self.last = batch_id
            self.since_maintenance += 1
            if (batch_id - self.phase) % MAINTENANCE_EVERY == 0:
                day = dt.datetime.fromtimestamp(batch_id * TRIGGER_S, dt.UTC).date()
                self.seeder.maintain(day)
                self.since_maintenance = 0
        return commits, time.perf_counter() - began

    def moved(self, rows: pa.Table) -> pa.Table:
        """``rows`` a day later, with Kafka offsets no row of the day has."""
        one_day = pa.scalar(dt.timedelta(days=1), pa.duration("us"))
        columns = {name: rows[name] for name in rows.column_names}
        for name in ("trade_ts", "ingest_ts", "processed_ts"):
            columns[name] = pc.add(rows[name], one_day)
        columns["kafka_offset"] = pc.add(rows["kafka_offset"], self.offset)
        days = pc.add(rows["trade_date"].cast(pa.int32()), pa.scalar(1, pa.int32()))
        columns["trade_date"] = days.cast(pa.date32())
        return pa.table(columns).cast(contracts.LAKE_SCHEMA)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=10_000_000)
    parser.add_argument(
        "--recent-batches",
        type=int,
        default=36,
        help="micro-batches committed since the last maintenance run when seeded (0..59)",
    )
    parser.add_argument(
        "--replay-minutes",
        type=int,
        default=20,
        help="minutes before now seeded as 5 s micro-batches (the hours before fast-forwarded)",
    )
    parser.add_argument("--loads", type=int, default=3, help="new processes per variant")
    parser.add_argument("--baseline-plain", action="store_true")
    parser.add_argument("--port", type=int, default=18599)
    parser.add_argument(
        "--baseline-imports",
        action="store_true",
        help="also the launcher as it was before its warm-up: the page's imports only",
    )
    parser.add_argument(
        "--baseline-rev",
        metavar="GIT_REV",
        help=f"also the launcher of the project as of this revision ({DELTA_DASHBOARD} or later)",
    )
    parser.add_argument(
        "--baseline-sequential",
        action="store_true",
        help="also the launcher whose server did not wait for the store's first snapshot",
    )
    parser.add_argument(
        "--at",
        default="23:59",
        help="the UTC time of the seeded day the pages are opened at (HH:MM), or 'now'",
    )
    args = parser.parse_args(argv)
    try:
        moment = opening_moment(args.at, dt.datetime.now(dt.UTC))
    except ValueError as exc:
        parser.error(f"--at {args.at!r}: {exc}")

    base = load_settings()
    window = base.dashboard_tail_minutes
    if args.replay_minutes < window:
        parser.error(f"--replay-minutes must cover the tail's window ({window} min)")
    if args.baseline_rev and not reads_delta_day(args.baseline_rev):
        parser.error(
            f"--baseline-rev {args.baseline_rev} reads the lake's layout before Delta: give a "
            f"revision with {DELTA_DASHBOARD} in its history (see the docstring)"
        )
    root = f"bench-first-page-{uuid.uuid4().hex[:8]}"
    symbols = DEMO_50_TICKERS
    settings = base.model_copy(
        update={"lake_prefix": f"{root}/lake", "summaries_prefix": f"{root}/summaries"}
    )
    print(f"store {base.s3_endpoint_url} bucket {base.s3_bucket} prefix {root}/")
    print(f"{os.cpu_count()} cores; tail window {window} min; {load()}", flush=True)
    env = {
        **os.environ,
        "FINPIPE_ENV_FILE": "",
        "S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "S3_BUCKET": settings.s3_bucket,
        "LAKE_PREFIX": settings.lake_prefix,
        "SUMMARIES_PREFIX": settings.summaries_prefix,
        "DASHBOARD_TAIL_MINUTES": str(window),
        "FINNHUB_TICKERS": ",".join(symbols),
    }
    launcher = (
        [sys.executable, "-m", "streamlit_app.serve"]  # what finpipe-dashboard runs
        if moment
        else [str(Path(sys.executable).with_name("finpipe-dashboard"))]
    )
    variants = {"launcher": launcher, WARM: launcher}
    if args.baseline_plain:
        plain = [sys.executable, "-m", "streamlit", "run", "streamlit_app/app.py"]
        variants["plain streamlit run"] = plain
    if args.baseline_imports:
        variants["imports only"] = [sys.executable, "-c", IMPORTS_ONLY]
    if args.baseline_sequential:
        variants[SEQUENTIAL] = [sys.executable, "-c", STORE_AFTER_WARM_UP]
    folders: dict[str, Path] = {}  # where a variant runs (its imports come from there)
    if args.baseline_rev:
        at_rev = f"launcher at {args.baseline_rev}"
        variants[at_rev] = [sys.executable, "-m", "streamlit_app.serve"]
        folders[at_rev] = export_revision(args.baseline_rev)
    pages: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    starts: dict[str, list[float]] = {name: [] for name in variants}
    again: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    logs = Path(tempfile.mkdtemp(prefix=f"{root}-"))
    url = f"http://127.0.0.1:{args.port}"
    try:
        began = time.perf_counter()

        def clock() -> dt.datetime:
            return moment or dt.datetime.now(dt.UTC)

        if moment:
            print(f"pages opened at {moment:%Y-%m-%d %H:%M} UTC (the dashboards' clocks set there)")
        table = generate(args.trades, clock(), symbols)
        seeder = seed_lake(settings, table, args.replay_minutes, args.recent_batches)
        seeded("lake", seeder)
        build_summaries(settings, table, clock())
        pipeline = Pipeline(seeder, table, args.recent_batches)
        print(
            f"{args.trades:,} trades of {len(symbols)} symbols seeded and summarised in "
            f"{time.perf_counter() - began:.0f} s; {load()}",
            flush=True,
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=ensure_chromium(), args=list(CHROMIUM_ARGS), headless=True
            )
            for n in range(args.loads):
                for name, command in variants.items():
                    commits, catch_up = pipeline.catch_up(clock())
                    log = logs / f"{name.replace(' ', '-')}-{n}.log"
                    if moment:
                        command = [sys.executable, "-c", CLOCKED, str(moment.timestamp()),
                                   *command[1:]]  # fmt: skip
                    proc = start(command, env, args.port, log, folders.get(name, ROOT))
                    try:
                        starts[name].append(wait_healthy(url, proc))
                        if name == WARM:
                            wait_warm(log)
                        page = browser.new_page(viewport={"width": 1500, "height": 1400})
                        pages[name].append(first_page(page, url))
                        page.close()
                        # the same page again in this process: the browser and the page's
                        # drawing without the process's first run (store and imports warm)
                        page = browser.new_page(viewport={"width": 1500, "height": 1400})
                        again[name].append(first_page(page, url))
                        page.close()
                    finally:
                        proc.terminate()
                        proc.wait(timeout=30)
                    (view, whole), (view_again, whole_again) = pages[name][-1], again[name][-1]
                    print(
                        f"  {name:<20} load {n + 1}: caught up {commits} batches in "
                        f"{catch_up:.1f} s (table v{seeder.version}, "
                        f"{pipeline.since_maintenance} since the last maintenance run); "
                        f"{warm_up(log)}; "
                        f"process up {starts[name][-1]:5.2f} s, "
                        f"first page: first view {view:5.2f} s, whole {whole:5.2f} s; the page "
                        f"again: first view {view_again:5.2f} s, whole {whole_again:5.2f} s; "
                        f"{load()}",
                        flush=True,
                    )
            browser.close()
    finally:
        cleanup(settings, root)
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)
    for name, samples in pages.items():
        views, wholes = [v for v, _ in samples], [w for _, w in samples]
        print(
            f"first page of a new process ({name}) over {len(samples)}: first view p50 "
            f"{statistics.median(views):.2f} s (max {max(views):.2f} s; target 3 s), whole page "
            f"p50 {statistics.median(wholes):.2f} s (max {max(wholes):.2f} s); process up p50 "
            f"{statistics.median(starts[name]):.2f} s; process start to first view p50 "
            f"{statistics.median(map(sum, zip(starts[name], views, strict=True))):.2f} s; "
            "the page again in the same process: "
            f"first view p50 {statistics.median(v for v, _ in again[name]):.2f} s, whole "
            f"p50 {statistics.median(w for _, w in again[name]):.2f} s"
        )
    at = [f"launcher at {args.baseline_rev}"] if args.baseline_rev else []
    for baseline in ("plain streamlit run", "imports only", SEQUENTIAL, *at):
        if baseline not in pages:
            continue
        for i, what in enumerate(("first view", "whole page")):
            ratio = statistics.median(s[i] for s in pages["launcher"]) / statistics.median(
                s[i] for s in pages[baseline]
            )
            print(f"first page launcher / {baseline} (p50 of the {what}): {ratio:.2f}")
    print(f"logs in {logs}; {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
