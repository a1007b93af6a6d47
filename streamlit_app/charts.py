"""Plotly figures of the dashboard (pure: data frame in, figure out)."""

from __future__ import annotations

import datetime as dt
import html
import math

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.colors import sample_colorscale, unlabel_rgb
from plotly.subplots import make_subplots

from streamlit_app.windows import Window

CANDLE_CHART_HEIGHT = 520
HEATMAP_COLUMNS = 8  # cells wide enough for BINANCE:1000PEPEUSDT on a laptop screen
HEATMAP_COLOURS = "RdYlGn"
HEATMAP_NO_CHANGE = "rgb(200, 200, 200)"
FEW_POINTS = 5  # a series shorter than this is drawn with markers
MIN_PERCENT_SPAN = 1.0  # the comparison's y axis spans at least this many percentage points
MIN_PRICE_SPAN = 0.002  # ... and the candles' at least this fraction of the price
HEATMAP_CLASS = "finpipe-heatmap"
HEATMAP_CELLS = f".{HEATMAP_CLASS} .cell"  # CSS selector of the cells (also the tests')
HEATMAP_STYLE = (
    f".{HEATMAP_CLASS} {{display: grid; gap: 3px; margin-bottom: 0.5rem}}"
    f" {HEATMAP_CELLS} {{height: 43px; display: flex; flex-direction: column;"
    " justify-content: center; align-items: center; font-size: 11px;"
    " line-height: 1.3; overflow: hidden; white-space: nowrap}"
)


def candlestick(bars: pd.DataFrame, symbol: str, window: Window) -> go.Figure:
    """1-minute candles with the session VWAP on top and volume bars beneath, over the
    whole window (a quiet market shows as empty space, not as a stretched chart)."""
    figure = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.74, 0.26], vertical_spacing=0.03
    )
    figure.add_trace(
        go.Candlestick(
            x=bars["minute"],
            open=bars["open"],
            high=bars["high"],
            low=bars["low"],
            close=bars["close"],
            name="1-min OHLC",
        ),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Scatter(
            x=bars["minute"],
            y=bars["session_vwap"],
            name="VWAP (session)",
            mode="lines",
            line={"width": 1.6, "color": "#f0a500"},
        ),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Bar(
            x=bars["minute"],
            y=bars["volume"],
            name="Volume",
            marker_color="rgba(100, 140, 200, 0.7)",
        ),
        row=2,
        col=1,
    )
    figure.update_layout(
        title={"text": symbol, "x": 0.01},
        height=CANDLE_CHART_HEIGHT,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": 1.04, "x": 1, "xanchor": "right"},
        xaxis_rangeslider_visible=False,
        uirevision=symbol,  # keeps the user's zoom across auto-refreshes
    )
    figure.update_xaxes(range=[window.start, window.end])
    prices = pd.concat([bars["low"], bars["high"], bars["session_vwap"].dropna()])
    span = MIN_PRICE_SPAN * float(prices.abs().max())
    figure.update_yaxes(title_text="price", range=readable_range(prices, span), row=1, col=1)
    figure.update_yaxes(title_text="volume", row=2, col=1)
    figure.update_yaxes(separatethousands=True, exponentformat="none")
    return figure


def comparison(prices: pd.DataFrame, window: Window) -> go.Figure:
    """Each symbol's close as a percentage of its first close in the window, over the
    whole window; a series of a few points is drawn with markers (one point draws no
    line)."""
    figure = px.line(prices, x="minute", y="normalized", color="symbol")
    short = prices.groupby("symbol").size().min() < FEW_POINTS
    figure.update_traces(
        mode="lines+markers" if short else "lines",
        hovertemplate="%{fullData.name}<br>%{x|%H:%M} UTC<br>%{y:.2f} %<extra></extra>",
    )
    figure.add_hline(y=100, line_dash="dot", line_color="gray")
    figure.update_layout(
        height=360,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis_title=None,
        legend_title_text=None,
        uirevision="comparison",
    )
    figure.update_xaxes(range=[window.start, window.end])
    figure.update_yaxes(
        title_text="% of first close in window",
        tickformat=".2f",
        range=readable_range(prices["normalized"], MIN_PERCENT_SPAN),
    )
    return figure


def readable_range(values: pd.Series, least_span: float) -> list[float] | None:
    """An axis range at least ``least_span`` wide around ``values``, or None (Plotly's own)
    when they already span that much: a flat or single value made Plotly zoom into its
    rounding noise (ticks like ``100.00000000000001421``)."""
    low, high = float(values.min()), float(values.max())
    if math.isnan(low) or high - low >= least_span:
        return None
    middle = (low + high) / 2
    return [middle - least_span / 2, middle + least_span / 2]


def returns_heatmap(
    tiles: pd.DataFrame,
    columns: int = HEATMAP_COLUMNS,
    *,
    source: str = "lake",
    newest_received: dt.datetime | None = None,
) -> str:
    """Today's change of every symbol as a grid of cells, biggest gain first, red to green
    around zero (one colour scale for all, so 50 symbols read at a glance).

    The grid's ``data-source`` (``live`` or ``lake``) and ``data-newest-received-ms`` (the
    producer's receive time of the newest trade shown, epoch ms) let a browser measure how
    old what it shows is (``bench/dashboard_live.py``).

    HTML for ``st.html``, not a Plotly figure: the browser draws it as soon as it arrives.
    As a Plotly chart, the page's first view waited for plotly.js, the largest script of
    the page, to be fetched and evaluated (measured in docs/benchmarks/dashboard.md). The
    charts further down still use Plotly.
    """
    ordered = tiles.sort_values("change_pct", ascending=False, na_position="last")
    columns = max(1, min(columns, len(ordered)))
    changes = [float(v) for v in ordered["change_pct"]]
    span = max((abs(v) for v in changes if not math.isnan(v)), default=1.0) or 1.0
    colours = sample_colorscale(
        HEATMAP_COLOURS, [0.5 if math.isnan(v) else (v / span + 1) / 2 for v in changes]
    )
    cells = "".join(
        _heatmap_cell(str(symbol), pct, colour)
        for symbol, pct, colour in zip(ordered["symbol"], changes, colours, strict=True)
    )
    received = "" if newest_received is None else str(int(newest_received.timestamp() * 1000))
    return (
        f"<style>{HEATMAP_STYLE}</style>"
        f'<div class="{HEATMAP_CLASS}" data-source="{html.escape(source, quote=True)}" '
        f'data-newest-received-ms="{received}" style="grid-template-columns: '
        f'repeat({columns}, minmax(0, 1fr))">{cells}</div>'
    )


def _heatmap_cell(symbol: str, pct: float, colour: str) -> str:
    if math.isnan(pct):  # no session open yet
        change, colour = "—", HEATMAP_NO_CHANGE
    else:
        change = f"{pct:+.2f} %"
    label = html.escape(f"{symbol} {change}", quote=True)
    red, green, blue = unlabel_rgb(colour)
    dark = 0.299 * red + 0.587 * green + 0.114 * blue < 128  # perceived brightness
    text = "#ffffff" if dark else "#1a1a1a"
    return (
        f'<div class="cell" style="background: {colour}; color: {text}" title="{label}">'
        f'<span class="symbol">{html.escape(symbol)}</span>'
        f'<span class="change">{html.escape(change)}</span></div>'
    )
