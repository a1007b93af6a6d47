"""A real browser (Debian's headless Chromium through Playwright) on the running app.

`finpipe-dashboard` serves the page against the seeded test MinIO (three hours of the
simulator's market, in 7 and in 50 symbols) while a feed goes on with the same market on
a Kafka topic of its own. The tests open a URL that names a symbol, wait for the
candlestick chart and the heatmap, read the page as a person would (at 1,280 and 1,920
px), watch the live parts change, stop the broker, and keep full-page screenshots in
test-artifacts/ (the README's are copies of them).
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
from typing import Any, NamedTuple

import pytest
from playwright.sync_api import Page, sync_playwright

from finpipe.settings import DEFAULT_TICKERS, Settings
from infra import services
from infra.stack import CHROMIUM_ARGS, ensure_chromium
from producer.simulator.market import DEMO_50_TICKERS
from streamlit_app import tables
from streamlit_app.charts import HEATMAP_CELLS, HEATMAP_CLASS, MARKETS_CLASS, MARKETS_ROWS
from tests.streamlit_app.dashboard_seed import MarketFeed, new_topic, seed_market, unique_settings
from tests.support.network import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
FEED_RATE = 100  # trades/s over all symbols: a chosen symbol trades at least twice a second
WIDTHS = (1280, 1920)  # px: every table and tile title must read whole at both
FIRST_LINES = """els => els.map(e => {
    const line = e.querySelector('tspan.line');
    return (line || e).textContent;
})"""
CELL_TEXTS = """els => els.map(e => [e.querySelector('.symbol').textContent,
                                 e.querySelector('.change').textContent])"""
HAS_CANDLESTICK = """() => [...document.querySelectorAll('.js-plotly-plot')]
    .some(p => (p.data || []).some(t => t.type === 'candlestick'))"""
# What a reader cannot see whole: per table the width hidden behind its horizontal scroll
# bar (the grids' and the HTML markets table's); the tiles' texts cut by an ellipsis; the
# heatmap's symbols and changes cut.
HIDDEN = f"""() => ({{
    tables: [...document.querySelectorAll('[data-testid="stDataFrame"]')]
        .map(t => {{ const s = t.querySelector('.dvn-scroller');
                    return s ? s.scrollWidth - s.clientWidth : null; }}),
    markets: [...document.querySelectorAll('.{MARKETS_CLASS}')]
        .map(t => t.scrollWidth - t.clientWidth),
    tiles: [...document.querySelectorAll('[data-testid="stMetric"] *')]
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent),
    cells: [...document.querySelectorAll('.{HEATMAP_CLASS} .cell')]
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent),
}})"""
# The markets table's rows as data (their attributes), in the page's order.
MARKET_ROWS = """els => els.map(e => [e.dataset.symbol, e.dataset.change])"""
SOURCE = f"""() => {{
    const grid = document.querySelector('.{HEATMAP_CLASS}');
    return grid && grid.dataset.source;
}}"""


# Rows the live push wrote a price into (push.py, live_push.js), and their change as data
# and as text.
PUSHED_ROWS = f"{MARKETS_ROWS}[data-received-ms]"
PUSHED_CHANGES = "els => els.map(e => [e.dataset.change, e.querySelector('td.change').textContent])"
PUSH_OPEN = "() => window.finpipeLivePush && window.finpipeLivePush.status === 'open'"


class Dashboard(NamedTuple):
    url: str
    symbols: list[str]
    feed: MarketFeed


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


def start_dashboard(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`finpipe-dashboard` as `make up` starts it (the launcher, then the server) on a
    loopback port, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "streamlit_app.serve"),
                *("--server.address", "127.0.0.1", "--server.port", str(port)),
                *("--server.headless", "true", "--browser.gatherUsageStats", "false"),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


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


@pytest.fixture(scope="module")
def dashboard(
    request: pytest.FixtureRequest,
    infrastructure: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Dashboard]:
    """`finpipe-dashboard` over three hours of the simulator's market in the symbols of
    the parameter, the market going on live on a topic of its own."""
    symbols = list(request.param)
    wait_for_a_trading_day()
    settings = unique_settings(infrastructure, "browser")
    prices = seed_market(settings, dt.datetime.now(dt.UTC), symbols)
    topic = new_topic(settings, "browser")
    feed = MarketFeed(settings, topic, prices, FEED_RATE)
    feed.start()
    port = free_port()
    env = dict(
        os.environ,
        LAKE_PREFIX=settings.lake_prefix,
        SUMMARIES_PREFIX=settings.summaries_prefix,
        FINNHUB_TICKERS=",".join(symbols),
        KAFKA_TOPIC=topic,
    )
    log_path = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    proc = start_dashboard(port, env, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        # the launcher answers only once its store has read the lake (serve.py)
        assert "dashboard.store_warm" in log_path.read_text(errors="replace")
        yield Dashboard(url, symbols, feed)
    finally:
        feed.stop()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=ensure_chromium(), args=list(CHROMIUM_ARGS), headless=True
        )
        yield chromium
        chromium.close()


def open_page(browser: Any, dashboard: Dashboard, symbol: str, width: int = WIDTHS[0]) -> Page:
    page = browser.new_page(viewport={"width": width, "height": 2200})
    page.goto(f"{dashboard.url}/?symbol={urllib.parse.quote(symbol)}", wait_until="commit")
    page.wait_for_function(HAS_CANDLESTICK, timeout=90_000)
    page.locator(HEATMAP_CELLS).first.wait_for(timeout=30_000)
    page.locator(MARKETS_ROWS).first.wait_for(timeout=30_000)
    # the other tables' grid loads its own script: wait for it as a person would, since
    # the charts above it can finish drawing first
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=\"stDataFrame\"] canvas').length >= 2",
        timeout=30_000,
    )
    return page


def tile(page: Page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]', has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text()


def no_error_on(page: Page) -> None:
    assert not page.locator('[data-testid="stException"]').count()
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and "%3A" not in body


@pytest.mark.parametrize(
    "dashboard", [DEFAULT_TICKERS, DEMO_50_TICKERS], ids=["7-symbols", "50-symbols"], indirect=True
)
def test_browser_shows_the_markets_live_and_every_table_whole(
    dashboard: Dashboard, browser: Any
) -> None:
    """What a person sees: every symbol in the heatmap (in its own spelling), the candles
    of the symbol named in the URL, the markets, the chosen symbol's price and the tape
    marked live and changing while the feed runs, every table with all its columns and
    every tile title whole at 1,280 and 1,920 px; a full-page screenshot."""
    symbols = dashboard.symbols
    chosen = "BRK.B" if "BRK.B" in symbols else symbols[-1]
    ARTIFACTS.mkdir(exist_ok=True)
    picture = ARTIFACTS / f"dashboard-{len(symbols)}.png"
    page = open_page(browser, dashboard, chosen)
    # each drawn cell: the symbol, then the change (its text, whatever the grid's reruns)
    cells = page.eval_on_selector_all(HEATMAP_CELLS, CELL_TEXTS)
    shown = {symbol for symbol, _ in cells}
    assert shown == set(symbols), set(symbols) ^ shown
    assert len(cells) == len(symbols)
    assert all(change.endswith("%") for _, change in cells), cells
    # the markets table: one row per symbol, ordered by the control above it
    rows = page.eval_on_selector_all(MARKETS_ROWS, MARKET_ROWS)
    assert sorted(symbol for symbol, _ in rows) == sorted(symbols), rows
    # every symbol traded today has its sparkline drawn (an image the page did not strip)
    # (waited for: the live part redraws its rows every second)
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('{MARKETS_ROWS} .spark img')]
            .filter(i => i.complete && i.naturalWidth > 0).length === {len(symbols)}""",
        timeout=15_000,
    )
    sort = page.locator('[data-testid="stButtonGroup"]')
    sort.get_by_role("radio", name="change ↓", exact=True).click()
    page.wait_for_function(
        f"""() => {{
            const rows = [...document.querySelectorAll('{MARKETS_ROWS}')]
                .map(e => e.dataset.change).filter(c => c !== '').map(Number);
            return rows.length > 1 && rows.every((c, i) => i === 0 || rows[i - 1] >= c);
        }}""",
        timeout=15_000,
    )
    titles = page.eval_on_selector_all(".js-plotly-plot .gtitle", FIRST_LINES)
    assert chosen in titles, titles

    # live: marked so, and changing within seconds while the feed runs
    page.wait_for_function(f"() => ({SOURCE})() === 'live'", timeout=30_000)
    assert tile(page, "Live feed") == "live"
    for heading in ("Markets today", "Trade tape"):
        badge = page.locator('[data-testid="stHeading"]', has_text=heading).first
        assert "live" in badge.inner_text()
    seen = [tile(page, "Last price")]
    deadline = time.monotonic() + 20
    while len(set(seen)) < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        if tile(page, "Price from") == "live":
            seen.append(tile(page, "Last price"))
    assert len(set(seen)) >= 3, f"the live price did not change: {seen}"
    assert tile(page, "Price from") == "live"

    # the push: the server's stream writes prices into the table between the fragment's
    # redraws (only it marks a row with the receive time), and the change it writes there
    # is the one the server writes
    page.wait_for_function(PUSH_OPEN, timeout=30_000)
    page.locator(PUSHED_ROWS).first.wait_for(timeout=15_000)
    assert page.get_by_text("live prices streaming").count() == 1
    for change, text in page.eval_on_selector_all(PUSHED_ROWS, PUSHED_CHANGES):
        assert text == tables.change_text(float(change)), (change, text)

    page.wait_for_timeout(6_000)  # past the lake part's next rerun (every 5 s)
    titles = page.eval_on_selector_all(".js-plotly-plot .gtitle", FIRST_LINES)
    assert chosen in titles, titles  # the choice of the URL stays
    assert not page.locator('[data-testid="stMetricLabel"]', has_text="BINANCE").count()
    no_error_on(page)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 2200})
        page.wait_for_timeout(1_000)  # the grids measure their columns again
        hidden = page.evaluate(HIDDEN)
        assert len(hidden["tables"]) == 2, hidden  # tape, daily statistics
        assert all(overflow == 0 for overflow in hidden["tables"]), (width, hidden)
        assert hidden["markets"] == [0], (width, hidden)  # one HTML table, no scroll bar
        assert hidden["tiles"] == [] and hidden["cells"] == [], (width, hidden)
    page.set_viewport_size({"width": WIDTHS[0], "height": 3000})  # the whole page
    page.wait_for_timeout(2_000)  # let plotly and the tables finish drawing
    page.screenshot(path=str(picture), full_page=True)
    page.close()
    assert picture.stat().st_size > 10_000


@pytest.mark.parametrize("dashboard", [DEMO_50_TICKERS], ids=["50-symbols"], indirect=True)
def test_with_the_broker_stopped_the_page_shows_the_lake_and_no_exception(
    dashboard: Dashboard, browser: Any, broker: Any, infrastructure: Settings
) -> None:
    """The broker stops: within seconds the page says Kafka is unreachable, the live
    parts show the lake and say so, nothing fails; it goes live again once it is back."""
    page = open_page(browser, dashboard, "BRK.B")
    page.wait_for_function(f"() => ({SOURCE})() === 'live'", timeout=30_000)
    broker.stop()
    warning = page.locator('[data-testid="stAlertContentWarning"]', has_text="unreachable")
    warning.wait_for(timeout=30_000)
    assert f"KAFKA_SERVER={infrastructure.kafka_server}" in warning.inner_text()
    page.wait_for_function(f"() => ({SOURCE})() === 'lake'", timeout=10_000)
    page.wait_for_timeout(6_000)  # the lake part's next rerun too
    # what was pushed went with the feed: the rows are the lake's, and the page says why
    assert page.locator(PUSHED_ROWS).count() == 0
    assert page.get_by_text("no live prices: the feed is down").count() == 1
    assert tile(page, "Live feed") == "down"
    assert tile(page, "Price from") == "lake"
    tape = page.locator('[data-testid="stHeading"]', has_text="Trade tape").first
    assert "lake" in tape.inner_text()
    assert page.locator(HEATMAP_CELLS).count() == len(dashboard.symbols)
    no_error_on(page)
    services.prepare_kafka(infrastructure)
    broker.start()
    page.wait_for_function(f"() => ({SOURCE})() === 'live'", timeout=60_000)
    page.locator(PUSHED_ROWS).first.wait_for(timeout=30_000)  # pushed again
    # the push can bring the prices back before the live parts' next rerun takes the
    # warning away (within DASHBOARD_LIVE_REFRESH_SECONDS)
    warning.wait_for(state="detached", timeout=15_000)
    no_error_on(page)
    page.close()
