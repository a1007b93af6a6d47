"""Plotly figures of the dashboard (pure: data frame in, figure out)."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from streamlit_app.windows import Window

CANDLE_CHART_HEIGHT = 520
HEATMAP_COLUMNS = 8  # cells wide enough for BINANCE:1000PEPEUSDT on a laptop screen
HEATMAP_ROW_HEIGHT = 46


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
    figure.update_yaxes(title_text="price", row=1, col=1)
    figure.update_yaxes(title_text="volume", row=2, col=1)
    return figure


def comparison(prices: pd.DataFrame) -> go.Figure:
    """Each symbol's close as a percentage of its first close in the window."""
    figure = px.line(prices, x="minute", y="normalized", color="symbol")
    figure.add_hline(y=100, line_dash="dot", line_color="gray")
    figure.update_layout(
        height=360,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        yaxis_title="% of first close in window",
        xaxis_title=None,
        legend_title_text=None,
        uirevision="comparison",
    )
    return figure


def returns_heatmap(tiles: pd.DataFrame, columns: int = HEATMAP_COLUMNS) -> go.Figure:
    """Today's change of every symbol as a grid of cells, biggest gain first, red to green
    around zero (one colour scale for all, so 50 symbols read at a glance)."""
    ordered = tiles.sort_values("change_pct", ascending=False, na_position="last")
    columns = max(1, min(columns, len(ordered)))
    rows = -(-len(ordered) // columns)
    cells = rows * columns
    change = list(ordered["change_pct"]) + [None] * (cells - len(ordered))
    labels = [
        f"{symbol}<br>{pct:+.2f} %" if pct == pct else f"{symbol}<br>—"  # NaN: no session open
        for symbol, pct in zip(ordered["symbol"], ordered["change_pct"], strict=True)
    ] + [""] * (cells - len(ordered))
    grid = [change[r * columns : (r + 1) * columns] for r in range(rows)]
    text = [labels[r * columns : (r + 1) * columns] for r in range(rows)]
    span = max((abs(v) for v in change if v is not None and v == v), default=1.0) or 1.0
    figure = go.Figure(
        go.Heatmap(
            z=grid,
            text=text,
            texttemplate="%{text}",
            textfont={"size": 10},
            hovertemplate="%{text}<extra></extra>",
            colorscale="RdYlGn",
            zmid=0,
            zmin=-span,
            zmax=span,
            xgap=3,
            ygap=3,
            showscale=False,
        )
    )
    figure.update_layout(
        height=HEATMAP_ROW_HEIGHT * rows + 10,
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        xaxis={"visible": False},
        yaxis={"visible": False, "autorange": "reversed"},
        uirevision="heatmap",
    )
    return figure
