"""The page renders, through Streamlit's AppTest, with data, without, and with no store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from finpipe.settings import Settings
from streamlit_app.app import plain
from tests.streamlit_app.dashboard_seed import BRK, BTC, seed_store, unique_settings
from tests.streamlit_app.test_store import closed_port

APP = Path(__file__).resolve().parents[2] / "streamlit_app" / "app.py"


def run_page(monkeypatch: pytest.MonkeyPatch, settings: Settings, **env: str) -> AppTest:
    monkeypatch.setenv("LAKE_PREFIX", settings.lake_prefix)
    monkeypatch.setenv("SUMMARIES_PREFIX", settings.summaries_prefix)
    monkeypatch.setenv("FINNHUB_TICKERS", f"{BTC},{BRK},MSFT")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    page = AppTest.from_file(str(APP), default_timeout=60)
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    return page


def texts(page: AppTest) -> str:
    parts = [m.value for m in page.markdown] + [i.value for i in page.info]
    parts += [e.value for e in page.error] + [c.value for c in page.caption]
    return "\n".join(str(p) for p in parts)


def test_page_with_data(monkeypatch: pytest.MonkeyPatch, infrastructure: Settings) -> None:
    settings = unique_settings(infrastructure)
    seed_store(settings, dt.datetime.now(dt.UTC))
    page = run_page(monkeypatch, settings)
    labels = [m.label for m in page.metric]
    assert {plain(BTC), plain(BRK), "MSFT"} <= set(labels)
    tile = next(m for m in page.metric if m.label == plain(BTC))
    assert tile.value == "106.00"
    assert page.selectbox(key="symbol").options == [BTC, BRK, "AAPL"]
    assert len(page.get("plotly_chart")) == 2  # candles and comparison
    assert not page.error

    page.radio(key="window").set_value("A past day").run()
    assert not page.exception
    past = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)).isoformat()
    assert page.selectbox(key="day").value.isoformat() == past
    assert f"Daily statistics · {past}" in [s.value for s in page.subheader]


def test_page_without_data(monkeypatch: pytest.MonkeyPatch, infrastructure: Settings) -> None:
    page = run_page(monkeypatch, unique_settings(infrastructure, "nodata"))
    assert "is the producer running?" in texts(page)
    assert not page.error
    assert not page.get("plotly_chart")


def test_page_with_the_store_unreachable(
    monkeypatch: pytest.MonkeyPatch, infrastructure: Settings
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    page = run_page(monkeypatch, infrastructure, S3_ENDPOINT_URL=endpoint)
    assert len(page.error) == 1
    assert endpoint in page.error[0].value and "make status" in page.error[0].value


def test_page_with_bad_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    page = run_page(monkeypatch, settings, FRESHNESS_WARN_SECONDS="900")
    assert "FRESHNESS_WARN_SECONDS must be smaller" in page.error[0].value
