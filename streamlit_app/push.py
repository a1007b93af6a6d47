"""The live prices pushed to every open page: a Server-Sent Events stream from the
dashboard's own server (``PUSH_PATH``, a route of ``dashboard.py``'s ``st.App``) and a
script in the page (``live_push.js``, mounted by :func:`follow`) that writes each price
into the markets table and heatmap as it comes.

Why: the live parts are a fragment rerun every DASHBOARD_LIVE_REFRESH_SECONDS, so the
newest price on screen was up to one refresh older than the feed (a glance's age, p99
1.36 s at 0.5 s, docs/benchmarks/dashboard.md). A script run per page and refresh is
what a faster refresh costs; a push costs one JSON line per page and interval
(DASHBOARD_LIVE_PUSH_SECONDS), read from the same shared feed (``live.py``). The fragment
still draws everything else (colours, order, tape, the quote), and whatever it draws
older than what was pushed is overwritten by the script as soon as it appears.

Each event carries, per symbol whose newest trade changed since the last event, the
price unformatted and as the page writes it (``tables.price_text``), the trade's time
(epoch ms and as the page writes it) and the producer's receive time (epoch ms). The
change since the session's open is the page's to compute: the row carries its open.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import streamlit as st
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from finpipe.settings import SettingsError, load_settings
from streamlit_app import charts, live, tables

PUSH_PATH = "/api/live-prices"
# Sent when nothing changed for this long: proxies keep the stream open, and a page whose
# connection died notices and reconnects.
KEEPALIVE_SECONDS = 15.0
RETRY_MS = 2000  # how soon a page's EventSource reconnects after the stream ends
# The feed is not live, sent once per change: still connecting (a dashboard that has just
# started), or down (Kafka unreachable, no topic yet).
CONNECTING = b"event: connecting\ndata: {}\n\n"
DOWN = b"event: down\ndata: {}\n\n"
JS = Path(__file__).with_name("live_push.js")

_encoder = msgspec.json.Encoder()
# Set when the server is asked to stop: every stream ends at its next tick. (Uvicorn's
# graceful shutdown waits for every response to end, and a stream never does by itself.)
STOPPING = threading.Event()


def end_streams_on_exit() -> None:
    """Chains ``STOPPING`` in front of the server's own SIGINT and SIGTERM handlers (call
    from the main thread once the server installed them: the app's lifespan)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            STOPPING.set()
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:  # nothing else handles it: as if unhandled
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        signal.signal(sig, handler)


def update(symbol: str, trade: live.LiveTrade) -> dict[str, Any]:
    """One symbol's newest trade as the page's script reads it."""
    traded = dt.datetime.fromtimestamp(trade.trade_ts_ms / 1000, dt.UTC)
    return {
        "s": symbol,
        "p": trade.price,
        "pt": tables.price_text(trade.price),
        "t": trade.trade_ts_ms,
        "tt": traded.strftime(tables.TIME_STRFTIME),
        "r": trade.ingest_ts_ms,
    }


def changes(
    latest: Mapping[str, live.LiveTrade], sent: dict[str, tuple[int, int, int]]
) -> list[dict[str, Any]]:
    """The symbols whose newest trade is not the one last sent (``sent`` is updated)."""
    out = []
    for symbol, trade in latest.items():
        if sent.get(symbol) != trade.order:
            sent[symbol] = trade.order
            out.append(update(symbol, trade))
    return out


async def events(
    feed: live.LiveFeed, every: float, keepalive: float = KEEPALIVE_SECONDS
) -> AsyncIterator[bytes]:
    """The stream's events: the changes every ``every`` seconds while the feed is live,
    ``CONNECTING`` or ``DOWN`` when it is not, a comment line when quiet. It ends when the
    page goes (Starlette cancels it, or the next write fails: within ``keepalive`` at most)
    or the server stops (``STOPPING``)."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    sent: dict[str, tuple[int, int, int]] = {}
    loop = asyncio.get_running_loop()
    quiet_since, was = loop.time(), None
    while not STOPPING.is_set():
        now, state = loop.time(), feed.status().state
        is_live = state is live.FeedState.LIVE
        if not is_live and state is not was:
            # the page forgets what was pushed: the fragment shows the lake and says why
            sent.clear()
            quiet_since = now
            yield CONNECTING if state is live.FeedState.CONNECTING else DOWN
        was = state
        changed = changes(feed.latest(), sent) if is_live else []
        if changed:
            quiet_since = now
            yield b"data: " + _encoder.encode(changed) + b"\n\n"
        elif now - quiet_since >= keepalive:
            quiet_since = now
            yield b": quiet\n\n"
        await asyncio.sleep(every)


async def live_prices(_request: Request) -> Response:
    """The route: the stream, or why there is none (push off, bad settings)."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        return PlainTextResponse(str(exc), status_code=503)
    if not settings.dashboard_live_push_seconds:
        return PlainTextResponse("DASHBOARD_LIVE_PUSH_SECONDS is 0: no push", status_code=404)
    feed = live.shared_feed(settings)
    return StreamingResponse(
        events(feed, settings.dashboard_live_push_seconds),
        media_type="text/event-stream",
        # no proxy or browser keeps it back (nginx buffers responses by default)
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


STATUS_CLASS = "finpipe-push-status"  # where the page's script says whether prices stream
# Defined once, at import (Streamlit registers it again on the runtime that mounts it).
_live_push = st.components.v2.component("finpipe_live_push", js=JS.read_text())


def status_line() -> None:
    """Where the page's script says whether prices stream (it fills it in)."""
    st.html(f'<span class="{STATUS_CLASS}"></span>')


def follow(every: float, paused: bool) -> None:
    """Mounts the page's script: it follows ``PUSH_PATH`` unless paused or the push is
    off, and says whether prices stream in ``status_line``. Mounted last on the page: the
    browser loads a component's code when it first meets one, and nothing of the page
    should wait for that."""
    _live_push(
        key="live_push",
        data={
            "path": PUSH_PATH.lstrip("/"),
            "on": bool(every) and not paused,
            "markets": charts.MARKETS_CLASS,
            "heatmap": charts.HEATMAP_CLASS,
            "status": STATUS_CLASS,
        },
        height="content",
    )
