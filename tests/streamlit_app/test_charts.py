"""The dashboard's figures as data: the markets heatmap's HTML and the Plotly figures' axes
(pure, no services)."""

from __future__ import annotations

import datetime as dt
import html
import re

import pandas as pd
import pytest

from streamlit_app.charts import (
    HEATMAP_CLASS,
    HEATMAP_NO_CHANGE,
    MIN_PERCENT_SPAN,
    MIN_PRICE_SPAN,
    candlestick,
    comparison,
    returns_heatmap,
)
from streamlit_app.windows import WindowChoice, resolve

CELL = re.compile(
    r'<div class="cell" style="background: (?P<bg>[^;]+); color: (?P<fg>[^"]+)" '
    r'title="(?P<title>[^"]*)"><span class="symbol">(?P<symbol>.*?)</span>'
    r'<span class="change">(?P<change>.*?)</span></div>'
)


def cells(page: str) -> list[dict[str, str]]:
    return [{k: html.unescape(v) for k, v in m.groupdict().items()} for m in CELL.finditer(page)]


def test_cells_are_ordered_by_change_and_coloured_around_zero() -> None:
    tiles = pd.DataFrame(
        {"symbol": ["FLAT", "UP", "DOWN", "NEW"], "change_pct": [0.0, 2.0, -4.0, float("nan")]}
    )
    page = returns_heatmap(tiles, columns=3)
    assert f'class="{HEATMAP_CLASS}"' in page
    assert "repeat(3, minmax(0, 1fr))" in page
    shown = cells(page)
    assert [c["symbol"] for c in shown] == ["UP", "FLAT", "DOWN", "NEW"]  # no change last
    assert [c["change"] for c in shown] == ["+2.00 %", "+0.00 %", "-4.00 %", "—"]
    up, flat, down, new = (c["bg"] for c in shown)
    assert down == "rgb(165, 0, 38)"  # the largest move takes the scale's end
    assert flat == "rgb(255, 255, 191)"  # zero is the scale's middle
    assert up != flat and up != down
    assert new == HEATMAP_NO_CHANGE
    assert shown[2]["fg"] == "#ffffff" and shown[1]["fg"] == "#1a1a1a"  # readable on both


def test_symbols_are_shown_verbatim_and_escaped() -> None:
    odd = ["BINANCE:1000PEPEUSDT", "BRK.B", 'A<b>"&', "OANDA:EUR_USD"]
    page = returns_heatmap(pd.DataFrame({"symbol": odd, "change_pct": [1.0, 0.5, -0.5, -1.0]}))
    assert 'A<b>"&' not in page and "A&lt;b&gt;&quot;&amp;" in page  # text, never markup
    assert [c["symbol"] for c in cells(page)] == odd
    assert [c["title"] for c in cells(page)][2] == 'A<b>"& -0.50 %'


def test_columns_never_exceed_the_symbols() -> None:
    page = returns_heatmap(pd.DataFrame({"symbol": ["ONLY"], "change_pct": [0.1]}))
    assert "repeat(1, minmax(0, 1fr))" in page


def test_a_one_point_comparison_reads_as_percent_around_100_over_the_window() -> None:
    """In the first minute a symbol has one bar: the line chart draws a marker, its y axis
    spans a readable band around 100 and its time axis the window (not milliseconds)."""
    now = dt.datetime(2026, 3, 10, 14, 30, 20, tzinfo=dt.UTC)
    window = resolve(WindowChoice.LAST_15_MIN, now)
    prices = pd.DataFrame(
        {
            "symbol": ["AAPL"],
            "minute": [pd.Timestamp("2026-03-10 14:30", tz="UTC")],
            "close": [0.1],
            "normalized": [100.00000000000001],
        }
    )
    figure = comparison(prices, window)
    (trace,) = [t for t in figure.data if t.name == "AAPL"]
    assert "markers" in trace.mode
    low, high = figure.layout.yaxis.range
    assert low < 100 < high and high - low == pytest.approx(MIN_PERCENT_SPAN)
    assert figure.layout.yaxis.tickformat == ".2f"
    assert list(figure.layout.xaxis.range) == [window.start, window.end]


def test_a_long_comparison_keeps_plotly_s_own_axis_and_plain_lines() -> None:
    now = dt.datetime(2026, 3, 10, 14, 30, 20, tzinfo=dt.UTC)
    window = resolve(WindowChoice.LAST_15_MIN, now)
    minutes = pd.date_range("2026-03-10 14:16", periods=10, freq="min", tz="UTC")
    prices = pd.DataFrame(
        {"symbol": "AAPL", "minute": minutes, "close": 1.0, "normalized": range(95, 105)}
    )
    figure = comparison(prices, window)
    assert figure.data[0].mode == "lines"
    assert figure.layout.yaxis.range is None


def test_one_flat_candle_gets_a_price_axis_around_its_price() -> None:
    now = dt.datetime(2026, 3, 10, 14, 30, 20, tzinfo=dt.UTC)
    window = resolve(WindowChoice.LAST_15_MIN, now)
    bars = pd.DataFrame(
        {
            "minute": [pd.Timestamp("2026-03-10 14:30", tz="UTC")],
            **{name: [93720.2] for name in ("open", "high", "low", "close", "session_vwap")},
            "volume": [0.5],
        }
    )
    figure = candlestick(bars, "BINANCE:BTCUSDT", window)
    low, high = figure.layout.yaxis.range
    assert low < 93720.2 < high and high - low == pytest.approx(MIN_PRICE_SPAN * 93720.2)
    assert figure.layout.yaxis.separatethousands


def test_the_heatmap_says_where_its_prices_come_from_and_how_new_they_are() -> None:
    tiles = pd.DataFrame({"symbol": ["UP"], "change_pct": [1.0]})
    received = dt.datetime(2026, 3, 10, 14, 30, 20, 123000, tzinfo=dt.UTC)
    page = returns_heatmap(tiles, source="live", newest_received=received)
    assert 'data-source="live"' in page
    assert f'data-newest-received-ms="{int(received.timestamp() * 1000)}"' in page
    assert 'data-source="lake" data-newest-received-ms=""' in returns_heatmap(tiles)
