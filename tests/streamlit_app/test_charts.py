"""The dashboard's figures as data: the markets heatmap's HTML and the Plotly figures' axes
(pure, no services)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
from html.parser import HTMLParser

import pandas as pd
import pytest

from streamlit_app.charts import (
    HEATMAP_CLASS,
    HEATMAP_NO_CHANGE,
    MARKETS_CLASS,
    MARKETS_SORTS,
    MIN_PERCENT_SPAN,
    MIN_PRICE_SPAN,
    SPARKLINE_COLUMN_PX,
    SPARKLINE_WIDTH,
    candlestick,
    comparison,
    drawn_closes,
    markets_table,
    returns_heatmap,
    sorted_markets,
    sparkline,
)
from streamlit_app.tables import MISSING
from streamlit_app.windows import WindowChoice, resolve

CELL = re.compile(
    r'<div class="cell" data-symbol="(?P<key>[^"]*)" '
    r'style="background: (?P<bg>[^;]+); color: (?P<fg>[^"]+)" '
    r'title="(?P<title>[^"]*)"><span class="symbol">(?P<symbol>.*?)</span>'
    r'<span class="change">(?P<change>.*?)</span></div>'
)


def cells(page: str) -> list[dict[str, str]]:
    return [{k: html.unescape(v) for k, v in m.groupdict().items()} for m in CELL.finditer(page)]


class _MarketRows(HTMLParser):
    """The markets table's rows: each row's attributes, and each cell's class and text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, object]] = []
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-symbol" in values:
            self.rows.append({"attrs": values, "cells": {}})
        elif tag == "td" and self.rows:
            self._cell = values.get("class", "").split()[0]
            cells = self.rows[-1]["cells"]
            assert isinstance(cells, dict)
            cells[self._cell] = {"class": values.get("class", ""), "text": "", **values}
        elif tag == "img" and self.rows and self._cell:
            cells = self.rows[-1]["cells"]
            assert isinstance(cells, dict)
            cells[self._cell]["shape"] = (tag, values)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell and self.rows:
            cells = self.rows[-1]["cells"]
            assert isinstance(cells, dict)
            cells[self._cell]["text"] += data


def market_rows(page: str) -> list[dict[str, object]]:
    """The rows of the markets table in ``page``, in its order: ``attrs`` (the row's
    ``data-*``) and ``cells`` by class (``text``, ``class``, the sparkline's ``shape``)."""
    parser = _MarketRows()
    parser.feed(page)
    return parser.rows


def market_frame(page: str) -> pd.DataFrame:
    """The markets table as data, read from its rows' attributes: symbol, price,
    change_pct and sparkline (the closes), one row each in the table's order."""

    def number(text: object) -> float:
        return float(text) if text else float("nan")  # type: ignore[arg-type]

    rows = market_rows(page)
    return pd.DataFrame(
        {
            "symbol": [r["attrs"]["data-symbol"] for r in rows],  # type: ignore[index]
            "price": [number(r["attrs"]["data-price"]) for r in rows],  # type: ignore[index]
            "change_pct": [number(r["attrs"]["data-change"]) for r in rows],  # type: ignore[index]
            "sparkline": [
                json.loads(r["cells"]["spark"]["data-closes"])  # type: ignore[index]
                for r in rows
            ],
        },
        columns=["symbol", "price", "change_pct", "sparkline"],
    )


def markets(symbols: list[str], changes: list[float]) -> pd.DataFrame:
    n = len(symbols)
    return pd.DataFrame(
        {
            "symbol": symbols,
            "price": [100.0] * n,
            "change_pct": changes,
            "sparkline": [[1.0, 2.0]] * n,
            "trade_ts": [pd.Timestamp("2026-03-10 14:30:05", tz="UTC")] * n,
        }
    )


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
    assert [c["key"] for c in cells(page)] == odd  # the live push finds each cell by it
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


def test_the_markets_table_writes_each_row_with_the_tables_formats() -> None:
    traded = pd.Timestamp("2026-03-10 14:30:05.250", tz="UTC")
    shown = pd.DataFrame(
        {
            "symbol": ["BINANCE:BTCUSDT", "BRK.B", "NEW"],
            "price": [93720.2, 0.0000123, float("nan")],
            "change_pct": [1.234, -0.5, float("nan")],
            "sparkline": [[93000.0, 93720.2], [0.0000124, 0.0000123], []],
            "trade_ts": [traded, traded, pd.NaT],
            "session_open": [92578.1, 0.0000124, float("nan")],
        }
    )
    page = markets_table(shown)
    assert page.startswith("<style>") and f'<div class="{MARKETS_CLASS}"><table>' in page
    btc, brk, new = market_rows(page)
    assert btc["attrs"] == {  # the values unformatted, for whatever reads the page as data
        "data-symbol": "BINANCE:BTCUSDT",
        "data-price": "93720.2",
        "data-change": "1.234",
        "data-open": "92578.1",  # the live push's change is against it (live_push.js)
        "data-trade-ms": str(int(traded.timestamp() * 1000)),
    }
    assert new["attrs"]["data-open"] == new["attrs"]["data-trade-ms"] == ""  # type: ignore[index]
    cells = {name: cell["text"] for name, cell in btc["cells"].items()}  # type: ignore[union-attr]
    assert cells == {
        "symbol": "BINANCE:BTCUSDT",
        "price": "93,720.20",
        "change": "+1.23 %",
        "spark": "",
        "time": "14:30:05",
    }
    assert brk["cells"]["price"]["text"] == "0.0000123"  # type: ignore[index]
    assert brk["cells"]["change"]["text"] == "-0.50 %"  # type: ignore[index]
    assert btc["cells"]["change"]["class"] == "change up"  # type: ignore[index]
    assert brk["cells"]["change"]["class"] == "change down"  # type: ignore[index]
    texts = {name: cell["text"] for name, cell in new["cells"].items()}  # type: ignore[union-attr]
    assert texts["price"] == texts["change"] == texts["time"] == MISSING
    assert new["attrs"]["data-price"] == new["attrs"]["data-change"] == ""  # type: ignore[index]
    assert "shape" not in new["cells"]["spark"]  # type: ignore[index]  # no closes, no line
    tag, attrs = btc["cells"]["spark"]["shape"]  # type: ignore[index]
    assert tag == "img" and attrs["src"].startswith("data:image/svg+xml;base64,")
    svg = base64.b64decode(attrs["src"].split(",", 1)[1]).decode()
    assert svg == sparkline([93000.0, 93720.2])
    frame = market_frame(page)
    assert frame["sparkline"].tolist() == [[93000.0, 93720.2], [0.0000124, 0.0000123], []]
    assert frame["price"].tolist()[:2] == [93720.2, 0.0000123]


def test_a_day_of_closes_draws_its_ends_and_each_column_s_low_and_high() -> None:
    day = [100.0 + (i % 7) - (i % 13) * 0.5 for i in range(1440)]  # a minute's close each
    day[700], day[701] = 250.0, 10.0  # a spike and a drop inside one column
    drawn = drawn_closes(day, width=SPARKLINE_WIDTH)
    assert len(drawn) <= 2 * SPARKLINE_WIDTH // SPARKLINE_COLUMN_PX + 2
    assert (drawn[0], drawn[-1]) == (day[0], day[-1])  # the colour and the newest close
    assert (min(drawn), max(drawn)) == (10.0, 250.0)  # the scale: the spike and the drop
    assert drawn.index(250.0) < drawn.index(10.0)  # in their order
    assert all(a in day for a in drawn)  # closes, never made up
    few = [1.0, 3.0, 2.0]
    assert drawn_closes(few) == few  # a few closes are drawn as they are


def test_a_full_day_s_markets_table_does_not_grow_with_the_day() -> None:
    """At 23:59 each of 50 symbols has 1,440 closes: the table (sent at every live
    refresh) holds what its lines draw, not the day."""
    symbols = [f"S{i:02d}" for i in range(50)]
    hours, day = markets(symbols, [0.5] * 50), markets(symbols, [0.5] * 50)
    hours["sparkline"] = [[100.0 + (i * k) % 17 for i in range(240)] for k in range(50)]
    day["sparkline"] = [[100.0 + (i * k) % 17 for i in range(1440)] for k in range(50)]
    page = markets_table(day)
    assert len(page) < 1.2 * len(markets_table(hours))  # drawn whole: 6 times its size
    for row, closes in zip(market_frame(page)["sparkline"], day["sparkline"], strict=True):
        assert row == drawn_closes(closes)


def test_the_markets_table_escapes_symbols() -> None:
    odd = ["BINANCE:1000PEPEUSDT", "BRK.B", 'A<b>"&', "OANDA:EUR_USD"]
    page = markets_table(markets(odd, [1.0, 0.5, -0.5, -1.0]))
    assert 'A<b>"&' not in page and "A&lt;b&gt;&quot;&amp;" in page  # text, never markup
    assert market_frame(page)["symbol"].tolist() == sorted(odd)
    assert [r["cells"]["symbol"]["text"] for r in market_rows(page)] == sorted(odd)  # type: ignore[index]


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        (MARKETS_SORTS[0], ["A", "B", "C", "D", "E"]),  # by symbol, the default
        ("change ↓", ["D", "B", "E", "A", "C"]),  # biggest gain first, ties by symbol
        ("change ↑", ["A", "B", "E", "D", "C"]),  # biggest loss first; no change last
    ],
)
def test_the_markets_table_sorts_server_side(sort: str, order: list[str]) -> None:
    shown = markets(["C", "E", "A", "D", "B"], [float("nan"), 0.0, -3.0, 2.0, 0.0])
    assert sorted_markets(shown, sort)["symbol"].tolist() == order
    assert market_frame(markets_table(shown, sort))["symbol"].tolist() == order


def test_an_unknown_sort_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown sort"):
        sorted_markets(markets(["A"], [1.0]), "price")


def points(svg: str) -> list[tuple[float, float]]:
    (found,) = re.findall(r'points="([^"]*)"', svg)
    return [(float(x), float(y)) for x, y in (p.split(",") for p in found.split())]


def test_a_sparkline_spans_its_own_low_and_high() -> None:
    svg = sparkline([10.0, 12.0, 11.0], width=100, height=20)
    (left, low), (middle, high), (right, between) = points(svg)
    assert left < middle < right and left >= 0 and right <= 100
    assert high < between < low  # SVG's y grows downwards: the high close is on top
    assert high >= 0 and low <= 20
    assert 'stroke="#137333"' in svg  # the last close above the first: green
    assert 'stroke="#c5221f"' in sparkline([12.0, 10.0])  # below: red


def test_a_flat_sparkline_is_a_line_through_the_middle() -> None:
    assert {y for _, y in points(sparkline([5.0, 5.0, 5.0], height=20))} == {10.0}


def test_a_one_close_sparkline_is_a_dot_and_none_is_nothing() -> None:
    one = sparkline([5.0], width=100, height=20)
    assert "<circle" in one and "<polyline" not in one and 'cy="10"' in one
    assert sparkline([]) == ""
