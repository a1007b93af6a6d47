"""The live layer: what the page makes of the feed's trades (pure), and the feed itself
against the real test broker (a topic of its own per test)."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator

import msgspec
import pandas as pd
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from finpipe.contracts import TradeRecord
from finpipe.settings import Settings
from streamlit_app import analytics, live
from streamlit_app.live import FeedState, LiveFeed, LiveTrade
from tests.streamlit_app.dashboard_seed import new_topic
from tests.streamlit_app.test_store import closed_port
from tests.support.waiting import wait_for

MS = 1_700_000_000_000  # an instant, in epoch ms


def trade(price: float, ms: int, offset: int = 0, received: int | None = None) -> LiveTrade:
    return LiveTrade(price, 1.0, ms, received or ms + 5, None, 0, offset, ms + 50)


def tiles() -> pd.DataFrame:
    """Three symbols as the lake shows them: one traded at MS, one never today."""
    return pd.DataFrame(
        {
            "symbol": ["AAPL", "BRK.B", "NEW"],
            "price": [200.0, 50.0, math.nan],
            # microseconds, as price_tiles returns the lake's timestamps (contracts.LAKE_TS)
            "trade_ts": pd.to_datetime([MS, MS, None], unit="ms", utc=True).as_unit("us"),
            "session_open": [100.0, 50.0, math.nan],
            "change_pct": [100.0, 0.0, math.nan],
            "sparkline": [[100.0, 200.0], [50.0], []],
        }
    )


def test_a_newer_live_trade_replaces_the_lake_s_price_and_change() -> None:
    merged = live.with_live_prices(
        tiles(),
        {
            "AAPL": trade(110.0, MS + 1000, received=MS + 1010),
            "BRK.B": trade(51.0, MS - 1000),  # older than the lake's: the lake's stays
            "NEW": trade(7.0, MS + 2000),  # no session open in the lake: no change
            "OTHER": trade(1.0, MS),  # not on the page
        },
    ).set_index("symbol")
    assert merged["live"].to_dict() == {"AAPL": True, "BRK.B": False, "NEW": True}
    assert merged.loc["AAPL", "price"] == 110.0
    assert merged.loc["AAPL", "change_pct"] == pytest.approx(10.0)
    assert merged.loc["AAPL", "trade_ts"] == pd.Timestamp(MS + 1000, unit="ms", tz="UTC")
    assert merged.loc["BRK.B", "price"] == 50.0 and merged.loc["BRK.B", "change_pct"] == 0.0
    assert merged.loc["NEW", "price"] == 7.0 and math.isnan(merged.loc["NEW", "change_pct"])
    assert list(merged.loc["AAPL", "sparkline"]) == [100.0, 200.0]  # the lake's, kept
    newest = live.newest_received(merged.reset_index())
    assert newest == pd.Timestamp(MS + 2005, unit="ms", tz="UTC")
    assert live.newest_received(tiles().assign(live=False)) is None


def test_the_live_tape_has_the_lake_tape_s_columns() -> None:
    trades = [trade(101.5, MS + 10, 3), trade(101.0, MS, 2)]
    tape = live.tape_frame(trades)
    assert list(tape.columns) == [
        "trade_ts",
        "price",
        "volume",
        "trade_value",
        "conditions",
        "latency_ms",
    ]
    assert tape["price"].tolist() == [101.5, 101.0]
    assert tape["latency_ms"].tolist() == [45, 45]  # read 50 ms after the trade, 5 after receipt


def test_sparklines_are_thinned_to_about_the_points_a_cell_shows() -> None:
    day = [float(i) for i in range(1440)]
    thin = analytics.thinned(day)
    assert len(thin) <= analytics.SPARKLINE_POINTS + 1
    assert thin[0] == 0.0 and thin[-1] == 1439.0
    assert analytics.thinned([1.0, 2.0]) == [1.0, 2.0]
    assert analytics.thinned([]) == []


# --- the feed against the real broker ------------------------------------------------


@pytest.fixture
def topic(infrastructure: Settings) -> Iterator[str]:
    name = new_topic(infrastructure)
    yield name
    AdminClient({"bootstrap.servers": infrastructure.kafka_server}).delete_topics([name])


def produce(settings: Settings, topic: str, records: list[TradeRecord | bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_server})
    encoder = msgspec.json.Encoder()
    for record in records:
        value = record if isinstance(record, bytes) else encoder.encode(record)
        key = record.symbol if isinstance(record, TradeRecord) else "junk"
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def record(symbol: str, price: float, ms: int | None = None) -> TradeRecord:
    now = ms or int(time.time() * 1000)
    return TradeRecord(symbol, price, 2.0, now, None, now + 3, "simulator")


def test_the_feed_starts_at_the_end_keeps_a_bounded_tape_and_skips_invalid_records(
    infrastructure: Settings, topic: str
) -> None:
    produce(infrastructure, topic, [record("AAPL", 1.0)])  # before the feed: not shown
    feed = LiveFeed(infrastructure.kafka_server, topic, tape_rows=6, max_symbols=2).start()
    try:
        wait_for("the feed to go live", lambda: feed.status().live, 30)
        # one symbol after the other (each symbol has its partition: no order between them)
        produce(infrastructure, topic, [record("AAPL", 10.0 + i) for i in range(5)])
        produce(infrastructure, topic, [b"not json", record("AAPL", -1.0)])  # not trades
        wait_for("AAPL", lambda: len(feed.tape("AAPL")) == 5, 30)
        assert [t.price for t in feed.tape("AAPL")] == [14.0, 13.0, 12.0, 11.0, 10.0]
        produce(infrastructure, topic, [record("MSFT", 5.0)])
        wait_for("MSFT", lambda: "MSFT" in feed.latest(), 30)
        produce(infrastructure, topic, [record("AAPL", 20.0), record("AAPL", 21.0)])
        wait_for("AAPL again", lambda: feed.latest()["AAPL"].price == 21.0, 30)
        assert [t.price for t in feed.tape("AAPL")] == [21.0, 20.0, 14.0, 13.0, 12.0, 11.0]
        produce(infrastructure, topic, [record("BRK.B", 7.0)])  # one symbol too many
        wait_for("BRK.B", lambda: "BRK.B" in feed.latest(), 30)
        assert set(feed.latest()) == {"AAPL", "BRK.B"}  # the least recently traded went
        assert feed.tape("MSFT") == []
        assert feed.status().symbols == 2
        assert feed.status().skipped == 2  # the junk and the negative price
        # the rate counts whole seconds: the one of these trades once it has passed
        wait_for("a rate", lambda: feed.status().trades_per_second > 0, 5)
    finally:
        feed.stop()


def test_the_newest_trade_is_by_trade_time_not_by_arrival(
    infrastructure: Settings, topic: str
) -> None:
    feed = LiveFeed(infrastructure.kafka_server, topic).start()
    try:
        wait_for("the feed to go live", lambda: feed.status().live, 30)
        now = int(time.time() * 1000)
        produce(infrastructure, topic, [record("AAPL", 2.0, now), record("AAPL", 1.0, now - 500)])
        wait_for("both trades", lambda: len(feed.tape("AAPL")) == 2, 30)
        assert feed.latest()["AAPL"].price == 2.0  # the late print does not become the last
        assert [t.price for t in feed.tape("AAPL")] == [2.0, 1.0]
    finally:
        feed.stop()


def test_a_feed_without_its_topic_or_broker_says_so(infrastructure: Settings) -> None:
    missing = LiveFeed(infrastructure.kafka_server, f"absent-{uuid.uuid4().hex[:8]}").start()
    nowhere = LiveFeed(f"127.0.0.1:{closed_port()}", "stock-ticks").start()
    try:
        wait_for("no topic", lambda: missing.status().state is FeedState.NO_TOPIC, 30)
        assert "KAFKA_TOPIC" in missing.status().message
        wait_for("unreachable", lambda: nowhere.status().state is FeedState.UNREACHABLE, 30)
        message = nowhere.status().message
        assert "KAFKA_SERVER=127.0.0.1:" in message and "make status" in message
        assert not nowhere.latest()
    finally:
        missing.stop()
        nowhere.stop()
