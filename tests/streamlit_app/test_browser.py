"""A real browser (Debian's headless Chromium through Playwright) on the running app.

`streamlit run` serves the page against the seeded test MinIO; the test waits for the
candlestick chart, reads the price tiles as a person would see them and keeps a
screenshot in test-artifacts/.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from finpipe.settings import Settings
from infra.stack import CHROMIUM_ARGS, ensure_chromium
from tests.streamlit_app.dashboard_seed import BRK, BTC, seed_store, unique_settings

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
HAS_CANDLESTICK = """() => [...document.querySelectorAll('.js-plotly-plot')]
    .some(p => (p.data || []).some(t => t.type === 'candlestick'))"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@pytest.fixture
def dashboard(infrastructure: Settings, tmp_path: Path) -> Iterator[str]:
    settings = unique_settings(infrastructure, "browser")
    seed_store(settings, dt.datetime.now(dt.UTC))
    port = free_port()
    env = dict(
        os.environ,
        LAKE_PREFIX=settings.lake_prefix,
        SUMMARIES_PREFIX=settings.summaries_prefix,
        FINNHUB_TICKERS=f"{BTC},{BRK}",
    )
    log = (tmp_path / "streamlit.log").open("wb")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app" / "app.py")),
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
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_browser_shows_candles_and_price_tiles(dashboard: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=ensure_chromium(), args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1400})
            page.goto(dashboard, wait_until="domcontentloaded")
            page.wait_for_function(HAS_CANDLESTICK, timeout=90_000)
            labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
            tiles = {label.strip() for label in labels}
            assert {BTC, BRK} <= tiles, tiles
            body = page.locator("body").inner_text()
            assert "%3A" not in body and "Traceback" not in body
            page.wait_for_timeout(1500)  # let plotly finish drawing before the picture
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
