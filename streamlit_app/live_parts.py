"""The page's live parts: the markets (heatmap and table), the chosen symbol's price and
the trade tape, drawn from the Kafka feed's newest trades (``live.py``) where it has them,
else from the lake's data of the enclosing run, and each marked *live* or *lake*.

They are one ``st.fragment`` (``draw``), rerun every DASHBOARD_LIVE_REFRESH_SECONDS, that
writes into containers the lake's run (``app.lake_view``) made for them: one script run
per session and refresh whatever the page's layout.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from finpipe.settings import Settings
from streamlit_app import analytics, charts, live, tables
from streamlit_app.live import FeedState, FeedStatus, LiveFeed


def source_badge(live_now: bool) -> str:
    return ":green-badge[live]" if live_now else ":gray-badge[lake]"


@dataclass(frozen=True)
class LiveParts:
    """Where the live parts go on the page (containers of the lake's run) and the lake's
    data they show when the feed has nothing newer."""

    markets: DeltaGenerator
    tiles: pd.DataFrame  # analytics.price_tiles
    lake_received: dt.datetime | None  # the newest trade's receive time in the lake's tail
    quote: DeltaGenerator | None = None
    tape: DeltaGenerator | None = None
    symbol: str | None = None
    lake_tape: pd.DataFrame | None = None


def draw(parts: LiveParts, feed: LiveFeed, settings: Settings) -> None:
    """The markets, the chosen symbol's price and the trade tape: the feed's newest trades
    where it has them, else the lake's; rerun every DASHBOARD_LIVE_REFRESH_SECONDS in one
    fragment that writes into the places the lake's run made for them."""
    status = feed.status()
    if status.live:
        shown = live.with_live_prices(parts.tiles, feed.latest())
    else:
        shown = parts.tiles.assign(live=False)
    with parts.markets:
        markets(shown, status, parts.lake_received, feed.topic)
    if parts.symbol is None or parts.quote is None or parts.tape is None:
        return
    with parts.quote:
        quote(shown[shown["symbol"] == parts.symbol].iloc[0])
    with parts.tape:
        trades = feed.tape(parts.symbol) if status.live else []
        tape(trades, parts.lake_tape, parts.symbol, settings)


def markets(
    shown: pd.DataFrame, status: FeedStatus, lake_received: dt.datetime | None, topic: str
) -> None:
    """Every subscribed symbol at a glance, readable at 50: a heatmap of today's change and
    a table with a sparkline per symbol, sorted by a control above it (tiles would fill
    screens)."""
    live_rows = int(shown["live"].sum())
    st.subheader(f"Markets today {source_badge(live_rows > 0)}")
    newest = max(
        (t for t in (live.newest_received(shown), lake_received) if t is not None), default=None
    )
    received = f" · newest trade received {newest:{tables.TIME_STRFTIME}} UTC" if newest else ""
    if status.live:
        st.caption(
            f"Prices from Kafka as they arrive ({topic}, {status.trades_per_second:,.0f} "
            f"trades/s): {live_rows} of {len(shown)} symbols traded since this dashboard "
            f"started, the others from the lake{received}"
        )
    elif status.state is FeedState.UNREACHABLE:
        st.warning(f"{status.message} Prices come from the lake meanwhile.", icon="⚠️")
    else:
        st.caption(f"Prices from the lake: {status.message}{received}")
    traded = shown[shown["price"].notna()]
    if not traded.empty:
        st.html(
            charts.returns_heatmap(
                traded, source="live" if live_rows else "lake", newest_received=newest
            )
        )
    # A widget with a key keeps its value across the fragment's reruns (every second).
    sort = st.segmented_control(
        "Sort the markets",
        charts.MARKETS_SORTS,
        default=charts.MARKETS_SORTS[0],
        key="markets_sort",
        required=True,
        label_visibility="collapsed",
    )
    st.html(charts.markets_table(shown, sort or charts.MARKETS_SORTS[0]))


def quote(row: pd.Series) -> None:
    """The chosen symbol's last price, change today and last trade."""
    cols = st.columns(3)
    change = row["change_pct"]
    cols[0].metric(
        "Last price",
        tables.price_text(row["price"]),
        delta=f"{change:+.2f} % today" if analytics.is_number(change) else None,
    )
    traded = row["trade_ts"]
    cols[1].metric(
        "Last trade (UTC)", traded.strftime(tables.TIME_STRFTIME) if pd.notna(traded) else "—"
    )
    cols[2].metric(
        "Price from",
        "live" if row["live"] else "lake",
        help="live: the Kafka feed's newest trade; lake: the lake's (seconds behind)",
    )


def tape(
    trades: list[live.LiveTrade], lake_tape: pd.DataFrame | None, symbol: str, settings: Settings
) -> None:
    """The symbol's newest trades from the feed when it has some, else the lake's."""
    st.subheader(f"Trade tape {source_badge(bool(trades))}")
    if trades:
        trade_tape(live.tape_frame(trades), symbol, "receive → dashboard ms")
        st.caption(f"The newest {len(trades)} trades read from Kafka since this dashboard started.")
    elif lake_tape is None or lake_tape.empty:
        st.info(
            f"No trades of {symbol} in the last {settings.dashboard_tail_minutes} minutes "
            "of the lake."
        )
    else:
        trade_tape(lake_tape, symbol, "receive → lake ms")


def trade_tape(tape: pd.DataFrame, symbol: str, latency_label: str) -> None:
    """The newest trades of one symbol, newest first (the lake's, or the live feed's)."""
    currency = tables.quote_currency(symbol)
    shown = tape[["trade_ts", "price", "volume", "trade_value", "conditions", "latency_ms"]]
    st.dataframe(
        tables.styled(
            shown.assign(conditions=shown["conditions"].map(tables.conditions_text)),
            {
                "price": tables.price_text,
                "volume": tables.volume_text,
                "trade_value": tables.money_text,
                "latency_ms": tables.count_text,
            },
        ),
        hide_index=True,
        height=360,
        column_config={
            "trade_ts": tables.time_column("time"),
            "price": st.column_config.NumberColumn("price"),
            "volume": st.column_config.NumberColumn("volume"),
            "trade_value": st.column_config.NumberColumn(
                f"value ({currency})" if currency else "value"
            ),
            "conditions": st.column_config.TextColumn("conditions"),
            "latency_ms": st.column_config.NumberColumn(latency_label),
        },
    )
