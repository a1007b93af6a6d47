"""The live push's server half (``push.py``): what each event carries (pure), the stream
from a real feed on the real test broker, and the route's answers when there is no push.
The page's half is tried in a real browser (``test_browser.py``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from confluent_kafka.admin import AdminClient
from starlette.requests import Request

from finpipe.settings import Settings
from streamlit_app import push, tables
from streamlit_app.live import LiveFeed, LiveTrade
from tests.streamlit_app.dashboard_seed import new_topic
from tests.streamlit_app.test_live import produce, record
from tests.streamlit_app.test_store import closed_port

MS = 1_764_979_200_123  # 2025-12-06 00:00:00.123 UTC


def trade(price: float, ms: int, offset: int = 0) -> LiveTrade:
    return LiveTrade(price, 1.0, ms, ms + 7, None, 0, offset, ms + 40)


def test_an_update_carries_the_price_as_the_page_writes_it_and_the_receive_time() -> None:
    assert push.update("BINANCE:BTCUSDT", trade(93720.2, MS)) == {
        "s": "BINANCE:BTCUSDT",
        "p": 93720.2,
        "pt": tables.price_text(93720.2),
        "t": MS,
        "tt": "00:00:00",
        "r": MS + 7,
    }


def test_only_symbols_whose_newest_trade_changed_are_sent_again() -> None:
    sent: dict[str, tuple[int, int, int]] = {}
    first = push.changes({"AAPL": trade(1.0, MS), "MSFT": trade(2.0, MS)}, sent)
    assert [u["s"] for u in first] == ["AAPL", "MSFT"]
    assert push.changes({"AAPL": trade(1.0, MS), "MSFT": trade(2.0, MS)}, sent) == []
    # a later trade, and one at the same time later in the topic: both are news
    again = push.changes({"AAPL": trade(1.5, MS + 1), "MSFT": trade(2.5, MS, offset=1)}, sent)
    assert [(u["s"], u["p"]) for u in again] == [("AAPL", 1.5), ("MSFT", 2.5)]


def test_the_page_s_change_text_is_the_tables_one() -> None:
    # live_push.js writes changes as tables.change_text does; the browser test compares
    # the two on the page, this pins the Python side's spelling it mirrors
    assert [tables.change_text(v) for v in (1.234, -0.4, 0.0, -0.001)] == [
        "+1.23 %",
        "-0.40 %",
        "+0.00 %",
        "-0.00 %",
    ]


# --- the stream from a real feed -------------------------------------------------------


@pytest.fixture
def topic(infrastructure: Settings) -> Iterator[str]:
    name = new_topic(infrastructure)
    yield name
    AdminClient({"bootstrap.servers": infrastructure.kafka_server}).delete_topics([name])


async def first_events(stream: AsyncIterator[bytes], count: int, timeout: float) -> list[bytes]:
    async def take() -> list[bytes]:
        out = []
        async for chunk in stream:
            out.append(chunk)
            if len(out) == count:
                return out
        return out

    return await asyncio.wait_for(take(), timeout)


def test_the_stream_sends_each_new_trade_once_from_a_live_feed(
    infrastructure: Settings, topic: str
) -> None:
    feed = LiveFeed(infrastructure.kafka_server, topic).start()
    try:

        async def run() -> list[bytes]:
            stream = push.events(feed, 0.05, keepalive=0.5)
            assert (await anext(stream)).startswith(b"retry: ")
            while not feed.status().live:  # until it is: the page waits
                assert await anext(stream) in (push.CONNECTING, push.DOWN, b": quiet\n\n")
            produce(infrastructure, topic, [record("AAPL", 10.0), record("AAPL", 11.0)])
            events = []
            while len(events) < 1 or b"11.0" not in b"".join(events):
                event = await asyncio.wait_for(anext(stream), 30)
                if event.startswith(b"data: "):
                    events.append(event)
            # nothing new: no data, a keep-alive comment instead
            assert await first_events(stream, 1, 5) == [b": quiet\n\n"]
            return events

        events = asyncio.run(run())
        updates = [u for e in events for u in json.loads(e.removeprefix(b"data: "))]
        assert updates[-1]["s"] == "AAPL" and updates[-1]["p"] == 11.0
        assert updates[-1]["pt"] == tables.price_text(11.0)
        assert len({(u["t"], u["p"]) for u in updates}) == len(updates)  # never twice
    finally:
        feed.stop()


def test_the_stream_says_down_when_kafka_is_unreachable(infrastructure: Settings) -> None:
    feed = LiveFeed(f"127.0.0.1:{closed_port()}", "nowhere").start()
    try:

        async def run() -> list[bytes]:
            stream = push.events(feed, 0.05, keepalive=60)
            events = [await anext(stream)]
            while events[-1] != push.DOWN:
                events.append(await asyncio.wait_for(anext(stream), 30))
            return events

        events = asyncio.run(run())
        # once per change: connecting (the feed just started), then down
        assert events[1:] in ([push.CONNECTING, push.DOWN], [push.DOWN])
    finally:
        feed.stop()


def test_a_feed_still_connecting_is_not_said_to_be_down() -> None:
    """A dashboard's first seconds: the page says connecting, never that the feed is down."""
    feed = LiveFeed(f"127.0.0.1:{closed_port()}", "nowhere")  # not started: connecting

    async def run() -> list[bytes]:
        return await first_events(push.events(feed, 0.05, keepalive=0.2), 4, 10)

    _retry, said, *rest = asyncio.run(run())
    assert said == push.CONNECTING
    assert rest == [b": quiet\n\n"] * 2  # said once; then only the keep-alive


def request() -> Request:
    return Request({"type": "http", "method": "GET", "path": push.PUSH_PATH, "headers": []})


def test_the_route_says_why_when_the_push_is_off_or_settings_are_bad(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DASHBOARD_LIVE_PUSH_SECONDS", "0")
    off = asyncio.run(push.live_prices(request()))
    assert off.status_code == 404 and b"DASHBOARD_LIVE_PUSH_SECONDS" in off.body
    monkeypatch.setenv("DASHBOARD_LIVE_PUSH_SECONDS", "0.01")
    bad = asyncio.run(push.live_prices(request()))
    assert bad.status_code == 503 and b"DASHBOARD_LIVE_PUSH_SECONDS" in bad.body
