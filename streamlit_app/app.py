"""The finpipe dashboard page: layout only (queries live in ``analytics.py``, how tables
write numbers in ``tables.py``).

Run with ``streamlit run streamlit_app/app.py``. The page below the controls is one
``st.fragment`` that reruns every DASHBOARD_REFRESH_SECONDS unless paused, so the page
refreshes without a full reload: it reads the lake and its summaries. Inside it, the
live parts (the markets' prices and changes, the chosen symbol's price, the trade tape)
are one fragment of their own that reruns every DASHBOARD_LIVE_REFRESH_SECONDS with what
the Kafka feed (``live.py``) read, over the lake's data of the enclosing run; without the
feed it shows that lake data and says why. The controls sit above, not in a sidebar: at
1,280 px a sidebar took a quarter of the width the tables need.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from finpipe.health import PRODUCER, SPARK, read_health
from finpipe.settings import Settings, SettingsError, load_settings
from streamlit_app import analytics, charts, live, tables
from streamlit_app.live import FeedState, FeedStatus, LiveFeed
from streamlit_app.status import LEVEL_BADGE, age_text, freshness_level, stream_status
from streamlit_app.store import Snapshot, Store, StoreUnavailable, shared_store
from streamlit_app.windows import Window, WindowChoice, resolve

MARKET_TABLE_MAX_HEIGHT = 540
SYMBOL_WIDTH = 180  # px: the longest Finnhub spellings (BINANCE:1000PEPEUSDT) in full
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!:$~|<>])")


def plain(text: str) -> str:
    """Escape Markdown so labels show symbols verbatim (``BINANCE:BTCUSDT``, ``BRK.B``)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def symbol_column() -> st.column_config.Column:
    return st.column_config.TextColumn("symbol", pinned=True, width=SYMBOL_WIDTH)


def time_column(label: str) -> st.column_config.Column:
    return st.column_config.DatetimeColumn(f"{label} (UTC)", format=tables.TIME_FORMAT)


# --- sections ---------------------------------------------------------------------------


FEED_WORDS = {
    FeedState.LIVE: ("live", "green"),
    FeedState.CONNECTING: ("starting", "gray"),
    FeedState.NO_TOPIC: ("no topic", "orange"),
    FeedState.UNREACHABLE: ("down", "red"),
}


def header(
    snapshot: Snapshot, freshness: analytics.Freshness, feed: FeedStatus, settings: Settings
) -> None:
    latency = analytics.end_to_end_latency(snapshot)
    cols = st.columns(6)
    with cols[0]:
        word, color = FEED_WORDS[feed.state]
        st.metric("Live feed", word, help=f"prices and the trade tape from Kafka: {feed.message}")
        st.badge(
            f"{feed.trades_per_second:,.0f} trades/s" if feed.live else "lake only", color=color
        )
    with cols[1]:
        level = freshness_level(freshness.age_seconds, settings)
        color, word = LEVEL_BADGE[level]
        st.metric(
            "Lake freshness",
            age_text(freshness.age_seconds) + (" old" if freshness.age_seconds else ""),
            help="age of the newest trade in the lake; green ≤ "
            f"{settings.freshness_warn_seconds} s, red > {settings.freshness_fail_seconds} s "
            "(FRESHNESS_* settings)",
        )
        st.badge(word, color=color)
    with cols[2]:
        value = (
            f"{latency.p50_ms / 1000:,.1f} / {latency.p95_ms / 1000:,.1f} s"
            if analytics.is_number(latency.p50_ms) and analytics.is_number(latency.p95_ms)
            else "—"
        )
        st.metric(
            "Lake latency p50 / p95",
            value,
            help="from the producer's receipt of a trade (ingest_ts) to its row written to "
            f"the lake (processed_ts), over the trades received in the last "
            f"{analytics.LATENCY_MINUTES} min; after a restart, over those received once "
            "the lake writer had caught up (the catch-up is not the platform's latency)",
        )
        window = (
            f"since {latency.since:{tables.TIME_STRFTIME}} (restart)"
            if latency.since
            else f"{analytics.LATENCY_MINUTES} min"
        )
        st.caption(f"receive → lake · {window} · {latency.trades:,} trades")
    for col, stream, title in ((cols[3], PRODUCER, "Producer"), (cols[4], SPARK, "Spark")):
        with col:
            status = stream_status(read_health(settings, stream), settings)
            color, _ = LEVEL_BADGE[status.level]
            st.metric(title, status.word)
            st.badge(status.text, color=color)
    with cols[5]:
        refreshed = snapshot.summaries_refreshed_at
        st.metric(
            "Summaries",
            refreshed.strftime(tables.TIME_STRFTIME) if refreshed else "—",
            help="newest publication of today's summary partitions (UTC)",
        )
        if refreshed:
            age = age_text((snapshot.now - refreshed).total_seconds())
            st.caption(f"published (UTC) · {age} ago")
        else:
            st.caption("no summary for today yet: are the Dagster assets running?")


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


def live_parts(parts: LiveParts, feed: LiveFeed, settings: Settings) -> None:
    """The markets, the chosen symbol's price and the trade tape: the feed's newest trades
    where it has them, else the lake's; rerun every DASHBOARD_LIVE_REFRESH_SECONDS in one
    fragment that writes into the places the lake's run made for them."""
    status = feed.status()
    shown = live.with_live_prices(parts.tiles, feed.latest()) if status.live else parts.tiles
    shown = shown if status.live else shown.assign(live=False)
    with parts.markets:
        live_markets(shown, status, parts.lake_received, feed.topic)
    if parts.symbol is None or parts.quote is None or parts.tape is None:
        return
    with parts.quote:
        live_quote(shown[shown["symbol"] == parts.symbol].iloc[0])
    with parts.tape:
        trades = feed.tape(parts.symbol) if status.live else []
        live_tape(trades, parts.lake_tape, parts.symbol, settings)


def live_markets(
    shown: pd.DataFrame, status: FeedStatus, lake_received: dt.datetime | None, topic: str
) -> None:
    """Every subscribed symbol at a glance, readable at 50: a heatmap of today's change and
    a sortable table with a sparkline per symbol (tiles would fill screens)."""
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
    table = shown[["symbol", "price", "change_pct", "sparkline", "trade_ts"]]
    st.dataframe(
        tables.styled(table, {"price": tables.price_text}),
        hide_index=True,
        height=min(MARKET_TABLE_MAX_HEIGHT, 38 + 35 * len(table)),
        key="markets",
        column_config={
            "symbol": symbol_column(),
            "price": st.column_config.NumberColumn("last price"),
            "change_pct": st.column_config.NumberColumn(
                "change today", format="%+.2f %%", help="since the session's first trade (UTC day)"
            ),
            "sparkline": st.column_config.LineChartColumn(
                "today (1-min closes)", width="large", color="auto"
            ),
            "trade_ts": time_column("last trade"),
        },
    )


def live_quote(row: pd.Series) -> None:
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


def live_tape(
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


def chosen_symbol(present: list[str]) -> str:
    """The symbol of the detailed charts, kept in the URL (``?symbol=...``) so a view can
    be shared as a link; a symbol in the URL without data falls back to the first.

    The URL is the only state: the selector starts at the URL's symbol and writes its
    choice back (a keyed widget set from session state lost the choice on the live
    fragment's next rerun).
    """
    wanted = st.query_params.get("symbol")
    index = present.index(wanted) if wanted in present else 0
    symbol = st.selectbox("Symbol", present, index=index)
    if wanted != symbol:
        st.query_params["symbol"] = symbol
    return symbol


def candle_chart(snapshot: Snapshot, symbol: str, window: Window) -> None:
    bars = analytics.candles(snapshot, symbol, window)
    if bars.empty:
        st.info(
            f"No trades of {symbol} in {window.label.lower()}. "
            + (
                "If the market of this symbol is closed, choose 'Today' or a past day."
                if window.live
                else "No summary was published for that day."
            )
        )
        return
    st.plotly_chart(charts.candlestick(bars, symbol, window), key="candles")
    last = bars.iloc[-1]
    st.caption(
        f"{len(bars):,} one-minute bars · last close {tables.price_text(last['close'])} · "
        f"bar VWAP {tables.price_text(last['vwap'])} · "
        f"session VWAP {tables.price_text(last['session_vwap'])}"
    )


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
            "trade_ts": time_column("time"),
            "price": st.column_config.NumberColumn("price"),
            "volume": st.column_config.NumberColumn("volume"),
            "trade_value": st.column_config.NumberColumn(
                f"value ({currency})" if currency else "value"
            ),
            "conditions": st.column_config.TextColumn("conditions"),
            "latency_ms": st.column_config.NumberColumn(latency_label),
        },
    )


def daily_table(snapshot: Snapshot, day: dt.date) -> None:
    stats = analytics.daily_stats(snapshot, day)
    if stats.empty:
        st.info(f"No daily statistics published for {day.isoformat()} yet.")
        return
    prices = ["open", "high", "low", "close", "vwap"]
    st.dataframe(
        tables.styled(
            stats,
            {
                **dict.fromkeys(prices, tables.price_text),
                "volume": tables.volume_text,
                "trade_count": tables.count_text,
                "realized_volatility": tables.percent_text,
            },
            money=["traded_value"],
        ),
        hide_index=True,
        column_config={
            "symbol": symbol_column(),
            **{name: st.column_config.NumberColumn(name) for name in prices},
            "vwap": st.column_config.NumberColumn("VWAP"),
            "volume": st.column_config.NumberColumn("volume"),
            "traded_value": st.column_config.NumberColumn("traded value"),
            "trade_count": st.column_config.NumberColumn("trades"),
            "realized_volatility": st.column_config.NumberColumn(
                "realized vol", help="square root of the sum of squared 1-minute log returns"
            ),
            "first_trade_ts": time_column("first"),
            "last_trade_ts": time_column("last"),
        },
    )


def comparison(snapshot: Snapshot, present: list[str], window: Window) -> None:
    chosen = st.multiselect("Compare symbols", present, default=present[:4], key="compare")
    if not chosen:
        st.info("Choose symbols to compare.")
        return
    prices = analytics.normalized_prices(snapshot, chosen, window)
    if prices.empty:
        st.info(f"No bars of the chosen symbols in {window.label.lower()}.")
        return
    st.plotly_chart(charts.comparison(prices, window), key="comparison")


# --- page -------------------------------------------------------------------------------


def lake_view(
    store: Store,
    feed: LiveFeed,
    settings: Settings,
    choice: WindowChoice,
    day: dt.date | None,
    live_every: float | None,
) -> None:
    now = dt.datetime.now(dt.UTC)
    window = resolve(choice, now, day)
    try:
        snapshot = store.snapshot(window.days, now)
    except StoreUnavailable as exc:
        st.error(str(exc), icon="🚫")
        st.caption(f"Retrying every {settings.dashboard_refresh_seconds:g} s.")
        return
    freshness = analytics.lake_freshness(snapshot)
    header(snapshot, freshness, feed.status(), settings)
    found = analytics.symbols_present(snapshot)
    # subscribed symbols first, in the order of FINNHUB_TICKERS, then any others found
    present = [s for s in settings.finnhub_tickers if s in found]
    present += [s for s in found if s not in present]
    subscribed = list(dict.fromkeys([*settings.finnhub_tickers, *present]))
    parts = LiveParts(
        st.container(), analytics.price_tiles(snapshot, subscribed), freshness.newest_received_ts
    )
    live_view = st.fragment(run_every=live_every)(live_parts)
    if not present:
        st.info(
            "Waiting for the first trades — is the producer running? "
            "(`make status` shows it; the Spark job writes the lake every "
            f"{settings.spark_trigger_seconds:g} s.)",
            icon="⏳",
        )
        live_view(parts, feed, settings)
        return
    st.subheader(f"1-minute candles · {window.label}")
    symbol = chosen_symbol(present)
    quote, candles, tape, rest = st.container(), st.container(), st.container(), st.container()
    # the live parts first, into their places: the markets are what the page is opened for
    lake_tape = analytics.trade_tape(snapshot, symbol)
    live_view(
        replace(parts, quote=quote, tape=tape, symbol=symbol, lake_tape=lake_tape), feed, settings
    )
    with candles:
        candle_chart(snapshot, symbol, window)
    with rest:
        day_shown = window.start.date() if not window.live else snapshot.today
        st.subheader(f"Daily statistics · {day_shown.isoformat()}")
        daily_table(snapshot, day_shown)
        st.subheader(f"Normalized prices · {window.label}")
        comparison(snapshot, present, window)
        st.caption(f"Updated {now:{tables.TIME_STRFTIME}} UTC")


def controls(store: Store, settings: Settings) -> tuple[bool, WindowChoice, dt.date | None]:
    """The window of the charts, a past day, and the pause switch, in one row."""
    window_col, day_col, pause_col = st.columns([3, 2, 2], vertical_alignment="bottom")
    with window_col:
        choice = st.radio("Window", list(WindowChoice), key="window", horizontal=True)
    day: dt.date | None = None
    with day_col:
        if choice is WindowChoice.PAST_DAY:
            today = dt.datetime.now(dt.UTC).date()
            try:
                days = [d for d in store.available_days() if d < today]
            except StoreUnavailable:
                days = []
            if days:
                day = st.selectbox("Day", days, key="day")
            else:
                st.caption("No past day has published summaries yet.")
    with pause_col:
        paused = st.toggle("Pause auto-refresh", value=False, key="paused")
        st.caption(
            f"Live prices every {settings.dashboard_live_refresh_seconds:g} s, the rest every "
            f"{settings.dashboard_refresh_seconds:g} s (DASHBOARD_*_SECONDS)."
        )
    return paused, choice, day


def main() -> None:
    st.set_page_config(page_title="finpipe · markets", page_icon="📈", layout="wide")
    st.title("finpipe · live market data")
    try:
        settings = load_settings()
    except SettingsError as exc:
        st.error(str(exc))
        st.stop()
    store = shared_store(settings)
    feed = live.shared_feed(settings)
    paused, choice, day = controls(store, settings)
    run_every = None if paused else settings.dashboard_refresh_seconds
    live_every = None if paused else settings.dashboard_live_refresh_seconds
    st.fragment(run_every=run_every)(lake_view)(store, feed, settings, choice, day, live_every)


main()
