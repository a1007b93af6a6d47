"""The dashboard's figures as data: the markets heatmap's HTML (pure, no services)."""

from __future__ import annotations

import html
import re

import pandas as pd

from streamlit_app.charts import HEATMAP_CLASS, HEATMAP_NO_CHANGE, returns_heatmap

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
