"""Benchmark plots: Plotly figures rendered to PNG by headless Chromium.

Plotly has no PNG export without an extra renderer; the test suite already drives
Debian's Chromium through Playwright, so a figure is written as a self-contained HTML
page and screenshotted. No network is needed: plotly.js is embedded in the page.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import plotly.graph_objects as go

from infra.stack import CHROMIUM_ARGS, ensure_chromium


def save_png(figure: go.Figure, path: Path, *, width: int = 1200, height: int = 900) -> Path:
    from playwright.sync_api import sync_playwright

    figure.update_layout(width=width, height=height, template="plotly_white")
    with tempfile.TemporaryDirectory(prefix="finpipe-plot-") as work:
        page_path = Path(work) / "figure.html"
        figure.write_html(page_path, include_plotlyjs=True, full_html=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=ensure_chromium(), args=list(CHROMIUM_ARGS)
            )
            try:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(page_path.as_uri())
                page.locator(".main-svg").first.wait_for(timeout=60_000)
                page.locator(".plotly-graph-div").first.screenshot(path=str(path))
            finally:
                browser.close()
    return path
