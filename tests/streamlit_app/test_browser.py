"""A real browser (Debian's headless Chromium through Playwright) on the running app.

`streamlit run` serves the page against the seeded test MinIO (three hours of the
simulator's market, in 7 and in 50 symbols); the test opens a URL that names a symbol,
waits for the candlestick chart and the heatmap, reads the heatmap's cells as a person
would see them and keeps a full-page screenshot in test-artifacts/.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from finpipe.settings import DEFAULT_TICKERS, Settings
from infra.stack import CHROMIUM_ARGS, ensure_chromium
from producer.simulator.market import DEMO_50_TICKERS
from streamlit_app.charts import HEATMAP_CELLS
from tests.streamlit_app.dashboard_seed import seed_market, unique_settings
from tests.support.network import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
FIRST_LINES = """els => els.map(e => {
    const line = e.querySelector('tspan.line');
    return (line || e).textContent;
})"""
HAS_CANDLESTICK = """() => [...document.querySelectorAll('.js-plotly-plot')]
    .some(p => (p.data || []).some(t => t.type === 'candlestick'))"""


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"streamlit did not answer on {url} within {timeout:.0f} s")


def wait_for_a_trading_day() -> None:
    """Sleep past midnight when the test would straddle it: "Markets today" shows the
    trades of the UTC day, and a market seeded just before midnight has none on the day
    the page loads (the page is right; the test would see an empty heatmap)."""
    now = dt.datetime.now(dt.UTC)
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    ready = start_of_day + dt.timedelta(minutes=2)
    if now >= start_of_day + dt.timedelta(hours=23, minutes=55):
        ready += dt.timedelta(days=1)
    if now < ready and ready - now <= dt.timedelta(minutes=7):
        time.sleep((ready - now).total_seconds())


@pytest.fixture(params=[DEFAULT_TICKERS, DEMO_50_TICKERS], ids=["7-symbols", "50-symbols"])
def dashboard(
    request: pytest.FixtureRequest, infrastructure: Settings, tmp_path: Path
) -> Iterator[tuple[str, list[str]]]:
    """``streamlit run`` over three hours of the simulator's market in 7 or 50 symbols."""
    symbols = list(request.param)
    wait_for_a_trading_day()
    settings = unique_settings(infrastructure, "browser")
    seed_market(settings, dt.datetime.now(dt.UTC), symbols)
    port = free_port()
    env = dict(
        os.environ,
        LAKE_PREFIX=settings.lake_prefix,
        SUMMARIES_PREFIX=settings.summaries_prefix,
        FINNHUB_TICKERS=",".join(symbols),
    )
    log = (tmp_path / "streamlit.log").open("wb")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "streamlit_app.serve"),  # what `make up` starts
            *("--server.address", "127.0.0.1", "--server.port", str(port)),
            *("--server.headless", "true", "--browser.gatherUsageStats", "false"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        # the launcher answers only once its store has read the lake (serve.py)
        assert "dashboard.store_warm" in (tmp_path / "streamlit.log").read_text(errors="replace")
        yield url, symbols
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_browser_shows_the_market_heatmap_table_and_the_symbol_of_the_url(
    dashboard: tuple[str, list[str]],
) -> None:
    """What a person sees: every symbol in the heatmap (in its own spelling), the table,
    the candles of the symbol named in the URL; a full-page screenshot in test-artifacts/."""
    url, symbols = dashboard
    chosen = "BRK.B" if "BRK.B" in symbols else symbols[-1]
    ARTIFACTS.mkdir(exist_ok=True)
    picture = ARTIFACTS / f"dashboard-{len(symbols)}.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=ensure_chromium(), args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            page.goto(f"{url}/?symbol={urllib.parse.quote(chosen)}", wait_until="domcontentloaded")
            page.wait_for_function(HAS_CANDLESTICK, timeout=90_000)
            page.locator(HEATMAP_CELLS).first.wait_for(timeout=30_000)
            # each drawn cell as a person reads it: the symbol, then the change
            cells = page.locator(HEATMAP_CELLS).all_inner_texts()
            shown = {cell.split("\n")[0].strip() for cell in cells}
            assert shown == set(symbols), set(symbols) ^ shown
            assert len(cells) == len(symbols)
            assert all(cell.split("\n")[1].strip().endswith("%") for cell in cells), cells
            # the table's grid loads its own script: wait for it as a person would, since
            # the charts above it can finish drawing first
            page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
            titles = page.eval_on_selector_all(".js-plotly-plot .gtitle", FIRST_LINES)
            assert chosen in titles, titles
            page.wait_for_timeout(7_000)  # past the live part's next rerun (every 5 s)
            titles = page.eval_on_selector_all(".js-plotly-plot .gtitle", FIRST_LINES)
            assert chosen in titles, titles  # the choice of the URL stays
            assert not page.locator('[data-testid="stMetricLabel"]', has_text="BINANCE").count()
            body = page.locator("body").inner_text()
            assert "%3A" not in body and "Traceback" not in body
            page.wait_for_timeout(2000)  # let plotly and the table finish drawing
            page.screenshot(path=str(picture), full_page=True)
        finally:
            browser.close()
    assert picture.stat().st_size > 10_000
