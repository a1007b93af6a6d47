"""The finpipe dashboard page: layout only (queries live in ``analytics.py``, how tables
write numbers in ``tables.py``, the live parts in ``live_parts.py``).

Served by ``dashboard.py`` (``finpipe-dashboard``), which adds the live prices' push
(``push.py``); ``streamlit run streamlit_app/app.py`` serves the page without it. The
page below the controls is one ``st.fragment`` that reruns every
DASHBOARD_REFRESH_SECONDS unless paused, so the page refreshes without a full reload: it
reads the lake and its summaries. Inside it, the live parts (the markets' prices and
changes, the chosen symbol's price, the trade tape) are one fragment of their own that
reruns every DASHBOARD_LIVE_REFRESH_SECONDS with what the Kafka feed (``live.py``) read,
over the lake's data of the enclosing run; without the feed it shows that lake data and
says why. Between those reruns the push writes the newest prices into the markets. The
controls sit above, not in a sidebar: at 1,280 px a sidebar took a quarter of the width
the tables need.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace

import streamlit as st

from finpipe.health import PRODUCER, SPARK, read_health
from finpipe.settings import Settings, SettingsError, load_settings
from streamlit_app import analytics, charts, live, live_parts, push, tables
from streamlit_app.live import FeedState, FeedStatus, LiveFeed
from streamlit_app.status import LEVEL_BADGE, age_text, freshness_level, stream_status
from streamlit_app.store import Snapshot, Store, StoreUnavailable, shared_store
from streamlit_app.windows import Window, WindowChoice, resolve

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!:$~|<>])")


def plain(text: str) -> str:
    """Escape Markdown so labels show symbols verbatim (``BINANCE:BTCUSDT``, ``BRK.B``)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


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
    cols = st.columns(6)
    with cols[0]:
        feed_tile(feed)
    with cols[1]:
        freshness_tile(freshness, settings)
    with cols[2]:
        latency_tile(analytics.end_to_end_latency(snapshot))
    for col, stream, title in ((cols[3], PRODUCER, "Producer"), (cols[4], SPARK, "Spark")):
        with col:
            status = stream_status(read_health(settings, stream), settings)
            color, _ = LEVEL_BADGE[status.level]
            st.metric(title, status.word)
            st.badge(status.text, color=color)
    with cols[5]:
        summaries_tile(snapshot)


def feed_tile(feed: FeedStatus) -> None:
    word, color = FEED_WORDS[feed.state]
    skipped = f"; {feed.skipped:,} records were not valid trades" if feed.skipped else ""
    st.metric(
        "Live feed", word, help=f"prices and the trade tape from Kafka: {feed.message}{skipped}"
    )
    st.badge(f"{feed.trades_per_second:,.0f} trades/s" if feed.live else "lake only", color=color)


def freshness_tile(freshness: analytics.Freshness, settings: Settings) -> None:
    color, word = LEVEL_BADGE[freshness_level(freshness.age_seconds, settings)]
    st.metric(
        "Lake freshness",
        age_text(freshness.age_seconds) + (" old" if freshness.age_seconds else ""),
        help="age of the newest trade in the lake; green ≤ "
        f"{settings.freshness_warn_seconds} s, red > {settings.freshness_fail_seconds} s "
        "(FRESHNESS_* settings)",
    )
    st.badge(word, color=color)


def latency_tile(latency: analytics.Latency) -> None:
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


def summaries_tile(snapshot: Snapshot) -> None:
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
            "symbol": tables.symbol_column(),
            **{name: st.column_config.NumberColumn(name) for name in prices},
            "vwap": st.column_config.NumberColumn("VWAP"),
            "volume": st.column_config.NumberColumn("volume"),
            "traded_value": st.column_config.NumberColumn("traded value"),
            "trade_count": st.column_config.NumberColumn("trades"),
            "realized_volatility": st.column_config.NumberColumn(
                "realized vol", help="square root of the sum of squared 1-minute log returns"
            ),
            "first_trade_ts": tables.time_column("first"),
            "last_trade_ts": tables.time_column("last"),
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
    parts = live_parts.LiveParts(
        st.container(), analytics.price_tiles(snapshot, subscribed), freshness.newest_received_ts
    )
    live_view = st.fragment(run_every=live_every)(live_parts.draw)
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
        pushed = settings.dashboard_live_push_seconds
        prices = f"Prices every {pushed:g} s, the live parts" if pushed else "Live parts"
        st.caption(
            f"{prices} every {settings.dashboard_live_refresh_seconds:g} s, the rest every "
            f"{settings.dashboard_refresh_seconds:g} s (DASHBOARD_*_SECONDS)."
        )
        if pushed and not paused:
            push.status_line()
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
    push.follow(settings.dashboard_live_push_seconds, paused)


main()
