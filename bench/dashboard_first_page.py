"""The dashboard's first page in a new Streamlit process, in a real browser, at 23:59 of a
50-symbol rolling-compacted day.

Builds the day as ``dashboard_queries.py --fifty --rolling`` does (per symbol 23 hour
segments written before the tail's window, then inside it the open segment and the young
batch files), then for each load: PUTs the young objects again (so they are inside the
window), starts a new dashboard process on the day, opens the page in headless Chromium
and times from the navigation to two milestones: the first view (the header's five
metrics, the markets heatmap and the markets table: what the page is opened for) and the
whole first run (also the Plotly charts, the other tables and the "Updated" line the run
writes last); then the same page once more in that process ("the page again": store and
imports warm, so what is left is mostly the browser's).

The launcher's process is measured twice per load: the page opened the moment the server
answers (the worst case), and opened once the process has logged the end of its store
warm-up ("launcher, warm": a dashboard that has been up for a few seconds when its first
user comes; the same moment since the server waits for the warm-up). Each variant also
reports the time from the process's start to its first view (process up + first view):
what a user who opens the page while the dashboard starts waits in all.

``--baseline-rev REV`` also starts the launcher of the project as of git revision REV
(from a copy of that revision's files, ``git archive``), same run, interleaved: the cost
of a change to the page, under the same load.

``--baseline-plain`` starts the process the way it was started before the launcher
(``streamlit run streamlit_app/app.py``: the page's libraries import on the first page),
in turn with ``finpipe-dashboard``, same run, and prints the ratio; ``--baseline-imports``
the launcher as it was before its warm-up (the page's imports only);
``--baseline-sequential`` the launcher as it was before its server waited for the store's
first snapshot (the snapshot started after the imports and the warm-up, in a thread
beside the server).

Usage (against the test MinIO that ``make test`` starts, kept with
``FINPIPE_KEEP_SERVICES=1``):

    S3_ENDPOINT_URL=http://127.0.0.1:19000 FINPIPE_ENV_FILE= .venv/bin/python \\
        bench/dashboard_first_page.py --baseline-plain --baseline-imports

The tail's window is 1 minute (``DASHBOARD_TAIL_MINUTES``' least) so the segments can be
made old by waiting two minutes (window + the tail's clock slack).
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

from dashboard_queries import (
    SEGMENT_BATCHES,
    build_summaries,
    cleanup,
    generate,
    load,
    put_all,
    put_batches,
    rolling_segments,
)
from playwright.sync_api import Page, sync_playwright

from finpipe.settings import load_settings
from infra.stack import CHROMIUM_ARGS, ensure_chromium
from producer.simulator.market import DEMO_50_TICKERS
from streamlit_app import lake_tail
from streamlit_app.charts import HEATMAP_CELLS

ROOT = Path(__file__).resolve().parents[1]
WINDOW_MINUTES = 1
# the first view: the header's five metrics, the heatmap and the markets table
FIRST_VIEW = f"""() => document.querySelectorAll('[data-testid="stMetric"]').length >= 5
    && document.querySelectorAll('{HEATMAP_CELLS}').length > 0
    && document.querySelectorAll('[data-testid="stDataFrame"] canvas').length >= 1"""
DRAWN = """() => {
    const plots = [...document.querySelectorAll('.js-plotly-plot')];
    const has = type => plots.some(p => (p.data || []).some(t => t.type === type));
    const text = document.body.innerText;
    return has('candlestick') && has('scatter') && /Updated \\d\\d:\\d\\d:\\d\\d UTC/.test(text)
        && document.querySelectorAll('[data-testid="stDataFrame"]').length >= 3;
}"""


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


def export_revision(rev: str) -> Path:
    """The project's files as of ``rev``, in a new temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix=f"first-page-{rev}-"))
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=10_000_000)
    parser.add_argument("--recent-batches", type=int, default=36)
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
        help="also the launcher of the project as of this revision",
    )
    parser.add_argument(
        "--baseline-sequential",
        action="store_true",
        help="also the launcher whose server did not wait for the store's first snapshot",
    )
    args = parser.parse_args(argv)

    base = load_settings()
    root = f"bench-first-page-{uuid.uuid4().hex[:8]}"
    symbols = DEMO_50_TICKERS
    settings = base.model_copy(
        update={
            "lake_prefix": f"{root}/lake",
            "summaries_prefix": f"{root}/summaries",
            "dashboard_tail_minutes": WINDOW_MINUTES,
        }
    )
    print(f"store {base.s3_endpoint_url} bucket {base.s3_bucket} prefix {root}/")
    print(f"{os.cpu_count()} cores; {load()}", flush=True)
    began = dt.datetime.now(dt.UTC)
    table = generate(args.trades, began, symbols)
    build_summaries(settings, table)
    old = rolling_segments(settings, table, symbols, began.date(), range(23))
    put_all(settings, old, threads=16)
    open_segments = rolling_segments(
        settings, table, symbols, began.date(), range(23, 24), SEGMENT_BATCHES - args.recent_batches
    )
    first_recent = 24 * SEGMENT_BATCHES - args.recent_batches + 1
    recent = range(first_recent, first_recent + args.recent_batches)
    print(f"{args.trades:,} trades; {len(old):,} segments before the window; {load()}")
    # the segments are old once they are older than the window and the tail's clock slack
    ready = time.monotonic() + (WINDOW_MINUTES * 60 + lake_tail.CLOCK_SLACK.total_seconds() + 5)
    time.sleep(max(0.0, ready - time.monotonic()))

    env = {
        **os.environ,
        "FINPIPE_ENV_FILE": "",
        "S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "S3_BUCKET": settings.s3_bucket,
        "LAKE_PREFIX": settings.lake_prefix,
        "SUMMARIES_PREFIX": settings.summaries_prefix,
        "DASHBOARD_TAIL_MINUTES": str(WINDOW_MINUTES),
        "FINNHUB_TICKERS": ",".join(symbols),
    }
    launcher = [str(Path(sys.executable).with_name("finpipe-dashboard"))]
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
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=ensure_chromium(), args=list(CHROMIUM_ARGS), headless=True
            )
            for n in range(args.loads):
                for name, command in variants.items():
                    now = dt.datetime.now(dt.UTC)
                    put_all(settings, open_segments)
                    put_batches(settings, symbols, recent, now)
                    log = logs / f"{name.replace(' ', '-')}-{n}.log"
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
                        f"  {name:<20} load {n + 1}: process up {starts[name][-1]:5.2f} s, "
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
