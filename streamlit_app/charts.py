"""Plotly figures of the dashboard (pure: data frame in, figure out)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.colors import sample_colorscale, unlabel_rgb
from plotly.subplots import make_subplots

from streamlit_app import tables
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

MARKETS_CLASS = "finpipe-markets"
MARKETS_ROWS = f".{MARKETS_CLASS} tbody tr"  # CSS selector of the rows (also the tests')
MARKETS_SORTS = ("symbol", "change ↓", "change ↑")  # the table's orders, the first by default
MARKETS_MAX_HEIGHT = 540  # px: 15 rows, then the table scrolls within itself
SPARKLINE_WIDTH, SPARKLINE_HEIGHT = 160, 24  # px
SPARKLINE_COLUMN_PX = 2  # a sparkline draws a low and a high per this many px at most
# Green and red with a contrast of at least 4.5:1 on the page's white (WCAG AA for text).
UP_COLOUR, DOWN_COLOUR = "#137333", "#c5221f"
MARKETS_STYLE = (
    f".{MARKETS_CLASS} {{max-height: {MARKETS_MAX_HEIGHT}px; overflow: auto;"
    " margin-bottom: 0.5rem}"
    f" .{MARKETS_CLASS} table {{width: 100%; border-collapse: collapse; font-size: 14px;"
    " font-variant-numeric: tabular-nums}"
    f" .{MARKETS_CLASS} th, .{MARKETS_CLASS} td {{padding: 2px 10px; white-space: nowrap;"
    " border-bottom: 1px solid rgba(128, 128, 128, 0.2); text-align: right}"
    f" .{MARKETS_CLASS} th {{position: sticky; top: 0; font-weight: 600;"
    " background: rgba(240, 242, 246, 0.95)}"
    f" .{MARKETS_CLASS} .symbol {{text-align: left}}"
    f" .{MARKETS_CLASS} .spark {{text-align: left; width: {SPARKLINE_WIDTH}px; line-height: 0}}"
    f" .{MARKETS_CLASS} .up {{color: {UP_COLOUR}}} .{MARKETS_CLASS} .down {{color: {DOWN_COLOUR}}}"
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
        change = tables.change_text(pct)
    label = html.escape(f"{symbol} {change}", quote=True)
    red, green, blue = unlabel_rgb(colour)
    dark = 0.299 * red + 0.587 * green + 0.114 * blue < 128  # perceived brightness
    text = "#ffffff" if dark else "#1a1a1a"
    return (
        f'<div class="cell" data-symbol="{html.escape(symbol, quote=True)}" '
        f'style="background: {colour}; color: {text}" title="{label}">'
        f'<span class="symbol">{html.escape(symbol)}</span>'
        f'<span class="change">{html.escape(change)}</span></div>'
    )


def sorted_markets(shown: pd.DataFrame, sort: str = MARKETS_SORTS[0]) -> pd.DataFrame:
    """The markets in one of ``MARKETS_SORTS``: by symbol, or by change today, biggest
    gain or biggest loss first; a symbol without a change (no session yet) last either
    way, and ties by symbol."""
    if sort not in MARKETS_SORTS:
        raise ValueError(f"unknown sort {sort!r}, expected one of {MARKETS_SORTS}")
    by_symbol = shown.sort_values("symbol", kind="stable")
    if sort == MARKETS_SORTS[0]:
        return by_symbol
    return by_symbol.sort_values(
        "change_pct", ascending=sort == MARKETS_SORTS[2], na_position="last", kind="stable"
    )


def markets_table(shown: pd.DataFrame, sort: str = MARKETS_SORTS[0]) -> str:
    """Every symbol's last price, change today, sparkline of today's 1-minute closes and
    last trade, one row each, in the order ``sort`` names (``MARKETS_SORTS``).

    Each row carries its values unformatted (``data-symbol``, ``data-price``,
    ``data-change``, ``data-open`` (the session's open), ``data-trade-ms`` (the last
    trade's time, epoch ms); the sparkline's cell ``data-closes``, JSON: the closes its
    line draws, ``drawn_closes``) for whatever reads the page as data rather than text:
    the live push (``push.py``) among them.

    HTML for ``st.html``, like the heatmap, not an ``st.dataframe``: the data grid takes
    this machine's browser about a second to draw its first pixel, an HTML table shows
    with the page's title (docs/benchmarks/dashboard.md). The order is chosen by a
    control above it, since the table has no clickable headers.
    """
    rows = "".join(
        _markets_row(
            str(row.symbol),
            row.price,
            row.change_pct,
            row.sparkline,
            row.trade_ts,
            getattr(row, "session_open", None),
        )
        for row in sorted_markets(shown, sort).itertuples(index=False)
    )
    head = "".join(
        f'<th class="{cls}"{title}>{label}</th>'
        for cls, label, title in (
            ("symbol", "symbol", ""),
            ("price", "last price", ""),
            ("change", "change today", ' title="since the session\'s first trade (UTC day)"'),
            ("spark", "today (1-min closes)", ""),
            ("time", "last trade (UTC)", ""),
        )
    )
    return (
        f"<style>{MARKETS_STYLE}</style>"
        f'<div class="{MARKETS_CLASS}"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def _markets_row(
    symbol: str, price: object, change: object, closes: object, traded: object, opened: object
) -> str:
    pct = float("nan") if tables.is_missing(change) else float(change)  # type: ignore[arg-type]
    if math.isnan(pct):
        change_text, tone = tables.MISSING, ""
    else:
        change_text = tables.change_text(pct)
        tone = "up" if pct > 0 else "down" if pct < 0 else ""
    values = drawn_closes(_closes(closes))
    time_text = (
        tables.MISSING
        if traded is None or pd.isna(traded)  # type: ignore[arg-type]
        else traded.strftime(tables.TIME_STRFTIME)  # type: ignore[attr-defined]
    )
    number = "" if tables.is_missing(price) else repr(float(price))  # type: ignore[arg-type]
    session_open = "" if tables.is_missing(opened) else repr(float(opened))  # type: ignore[arg-type]
    traded_ms = (
        "" if traded is None or pd.isna(traded) else str(int(traded.timestamp() * 1000))  # type: ignore[arg-type,attr-defined]
    )
    return (
        f'<tr data-symbol="{html.escape(symbol, quote=True)}" data-price="{number}" '
        f'data-change="{"" if math.isnan(pct) else repr(pct)}" data-open="{session_open}" '
        f'data-trade-ms="{traded_ms}">'
        f'<td class="symbol">{html.escape(symbol)}</td>'
        f'<td class="price">{html.escape(tables.price_text(price))}</td>'
        f'<td class="change {tone}">{html.escape(change_text)}</td>'
        f'<td class="spark" data-closes="{html.escape(json.dumps(values), quote=True)}">'
        f"{sparkline_image(values)}</td>"
        f'<td class="time">{time_text}</td></tr>'
    )


def _closes(closes: object) -> list[float]:
    """The finite closes of a sparkline cell (a list, an array, or nothing)."""
    if closes is None or not pd.api.types.is_list_like(closes):
        return []
    values = np.asarray(closes, dtype=float)
    return values[np.isfinite(values)].tolist()


def drawn_closes(closes: Sequence[float], width: int = SPARKLINE_WIDTH) -> list[float]:
    """The closes a sparkline ``width`` px wide draws: all when they are few, else per
    column of ``SPARKLINE_COLUMN_PX`` the lowest and the highest in their order, and the
    first and the last close. The line keeps its ends, its low and high (so its scale and
    colour) and every swing a pixel can show.

    At the end of a day a symbol has 1,440 closes: drawn whole, the 50 rows of the markets
    table were 2.4 MB of HTML, built, sent and parsed again at every live refresh."""
    columns = max(1, width // SPARKLINE_COLUMN_PX)
    if len(closes) <= 2 * columns + 2:
        return list(closes)
    values = np.asarray(closes, dtype=float)
    column = np.arange(len(values)) * columns // len(values)  # each close's column
    starts = np.flatnonzero(np.r_[True, column[1:] != column[:-1]])
    sizes = np.diff(np.r_[starts, len(values)])
    keep = [np.array([0, len(values) - 1])]
    for extreme in (np.minimum, np.maximum):
        # per column, the first close equal to the column's extreme
        hits = np.flatnonzero(values == np.repeat(extreme.reduceat(values, starts), sizes))
        keep.append(hits[np.unique(column[hits], return_index=True)[1]])
    return values[np.unique(np.concatenate(keep))].tolist()


def sparkline_image(closes: Sequence[float]) -> str:
    """The sparkline as an ``<img>`` of its SVG, or nothing without closes.

    An image, not inline SVG: ``st.html`` sanitizes with DOMPurify's HTML profile, which
    removes ``<svg>`` elements but keeps an image's ``data:`` URI."""
    svg = sparkline(closes)
    if not svg:
        return ""
    data = base64.b64encode(svg.encode()).decode()  # in C: quoting it cost more than the rest
    return (
        f'<img src="data:image/svg+xml;base64,{data}" width="{SPARKLINE_WIDTH}" '
        f'height="{SPARKLINE_HEIGHT}" alt="today\'s 1-minute closes">'
    )


def sparkline(
    closes: Sequence[float], width: int = SPARKLINE_WIDTH, height: int = SPARKLINE_HEIGHT
) -> str:
    """A line of ``closes`` over the cell's width, scaled to their own low and high, green
    when the last is not below the first, else red; a flat series is a line through the
    middle, one close a dot on the right (where the newest close goes), none nothing."""
    if not closes:
        return ""
    colour = UP_COLOUR if closes[-1] >= closes[0] else DOWN_COLOUR
    pad = 2.0  # the stroke's half-width and a little air, so the extremes are not cut
    svg = (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'xmlns="http://www.w3.org/2000/svg">'
    )
    if len(closes) == 1:
        return (
            f'{svg}<circle cx="{width - pad:g}" cy="{height / 2:g}" r="2" fill="{colour}"/></svg>'
        )
    low, high = min(closes), max(closes)
    step = (width - 2 * pad) / (len(closes) - 1)
    span = high - low
    points = " ".join(
        f"{pad + i * step:.1f},"
        f"{height / 2 if span == 0 else pad + (high - v) / span * (height - 2 * pad):.1f}"
        for i, v in enumerate(closes)
    )
    return (
        f'{svg}<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5" '
        'stroke-linejoin="round"/></svg>'
    )
