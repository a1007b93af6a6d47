"""The page renders, through Streamlit's AppTest, with data, without, and with no store."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from finpipe.settings import Settings
from producer.simulator.market import DEMO_50_TICKERS
from tests.streamlit_app.dashboard_seed import (
    BRK,
    BTC,
    many_trades,
    seed_now,
    seed_store,
    unique_settings,
    write_lake,
)
from tests.streamlit_app.test_store import closed_port

APP = Path(__file__).resolve().parents[2] / "streamlit_app" / "app.py"


def run_page(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, page: AppTest | None = None, **env: str
) -> AppTest:
    monkeypatch.setenv("LAKE_PREFIX", settings.lake_prefix)
    monkeypatch.setenv("SUMMARIES_PREFIX", settings.summaries_prefix)
    monkeypatch.setenv("FINNHUB_TICKERS", f"{BTC},{BRK},MSFT")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if page is None:
        page = AppTest.from_file(str(APP), default_timeout=60)
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    return page


def market_table(page: AppTest) -> pd.DataFrame:
    (table,) = [d.value for d in page.dataframe if "sparkline" in d.value.columns]
    return table


def symbol_box(page: AppTest):  # type: ignore[no-untyped-def]
    return next(box for box in page.selectbox if box.label == "Symbol")


def texts(page: AppTest) -> str:
    parts = [m.value for m in page.markdown] + [i.value for i in page.info]
    parts += [e.value for e in page.error] + [c.value for c in page.caption]
    return "\n".join(str(p) for p in parts)


def test_page_with_data(monkeypatch: pytest.MonkeyPatch, infrastructure: Settings) -> None:
    settings = unique_settings(infrastructure)
    seed_store(settings, seed_now())  # 20 minutes into the day: the first bar is today's
    page = run_page(monkeypatch, settings)
    markets = market_table(page)
    assert list(markets["symbol"]) == sorted([BTC, BRK, "MSFT", "AAPL"])  # subscribed + found
    row = markets.set_index("symbol").loc[BTC]
    assert row["price"] == 106.0
    assert row["change_pct"] == pytest.approx((106.0 / 100.0 - 1) * 100)  # first bar's open
    assert symbol_box(page).options == [BTC, BRK, "AAPL"]
    assert len(page.get("plotly_chart")) == 3  # heatmap, candles and comparison
    assert page.query_params["symbol"] == BTC
    assert not page.error

    page.radio(key="window").set_value("A past day").run()
    assert not page.exception
    past = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)).isoformat()
    assert page.selectbox(key="day").value.isoformat() == past
    assert f"Daily statistics · {past}" in [s.value for s in page.subheader]


def test_fifty_symbols_read_as_one_table_a_heatmap_and_a_shared_symbol(
    monkeypatch: pytest.MonkeyPatch, infrastructure: Settings
) -> None:
    """Finnhub's limit, odd spellings included: one sortable table row per symbol with its
    sparkline, one heatmap cell each, no tiles; the detailed symbol comes from the URL and
    goes back into it."""
    settings = unique_settings(infrastructure, "fifty")
    now = seed_now()
    symbols = list(DEMO_50_TICKERS)
    trades = many_trades(now, symbols)
    write_lake(settings, trades)
    page = AppTest.from_file(str(APP), default_timeout=60)
    page.query_params["symbol"] = "OANDA:EUR_USD"
    page = run_page(monkeypatch, settings, page=page, FINNHUB_TICKERS=",".join(symbols).lower())
    markets = market_table(page).set_index("symbol")
    assert sorted(markets.index) == sorted(symbols)
    for i, symbol in enumerate(symbols):
        assert markets.loc[symbol, "change_pct"] == pytest.approx((i - 25) / 10)
        assert list(markets.loc[symbol, "sparkline"]) == pytest.approx(
            [10.0 + i, (10.0 + i) * (1 + (i - 25) / 1000)]
        )
    assert not page.metric or all(m.label not in symbols for m in page.metric)  # no tiles
    heatmap = next(c for c in page.get("plotly_chart") if '"heatmap"' in c.proto.spec)
    cells = json.loads(heatmap.proto.spec)["data"][0]["text"]
    assert sum(bool(cell) for row in cells for cell in row) == len(symbols)
    assert symbol_box(page).value == "OANDA:EUR_USD"
    symbol_box(page).set_value("BINANCE:1000PEPEUSDT").run()
    assert not page.exception
    assert page.query_params["symbol"] == "BINANCE:1000PEPEUSDT"
    page.run()  # the next refresh keeps the choice
    assert symbol_box(page).value == "BINANCE:1000PEPEUSDT"


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
