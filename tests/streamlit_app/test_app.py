"""The page renders, through Streamlit's AppTest, with data, without, with no store, with
the live feed and without its broker."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from finpipe.settings import Settings, load_settings
from producer.simulator.market import DEMO_50_TICKERS
from streamlit_app import live
from streamlit_app.charts import HEATMAP_CLASS, MARKETS_CLASS, MARKETS_SORTS
from streamlit_app.live import FeedState
from tests.streamlit_app.dashboard_seed import (
    BRK,
    BTC,
    many_trades,
    minute_of,
    seed_store,
    unique_settings,
    write_lake,
)
from tests.streamlit_app.test_charts import cells as heatmap_cells
from tests.streamlit_app.test_charts import market_frame
from tests.streamlit_app.test_live import produce, record
from tests.streamlit_app.test_live import topic as topic  # a fixture
from tests.streamlit_app.test_store import closed_port
from tests.support.waiting import wait_for

APP = Path(__file__).resolve().parents[2] / "streamlit_app" / "app.py"
# The pages' live feed reads a topic nothing writes to unless a test says otherwise: the
# lake's prices are what the tests check (one feed for them all: one per topic and process).
QUIET_TOPIC = f"dashboard-quiet-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _stop_feeds() -> Iterator[None]:
    """Each test's pages get a feed of their own, stopped after the test."""
    yield
    live.release_feeds()


def run_page(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, page: AppTest | None = None, **env: str
) -> AppTest:
    monkeypatch.setenv("LAKE_PREFIX", settings.lake_prefix)
    monkeypatch.setenv("SUMMARIES_PREFIX", settings.summaries_prefix)
    monkeypatch.setenv("FINNHUB_TICKERS", f"{BTC},{BRK},MSFT")
    monkeypatch.setenv("KAFKA_TOPIC", QUIET_TOPIC)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if page is None:
        page = AppTest.from_file(str(APP), default_timeout=60)
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    return page


def past_midnight() -> dt.datetime:
    """Now, at least 15 s into the UTC day (the page shows the day's session; the seeds
    put trades up to 5 s into now's minute and clamp the others to the day)."""
    now = dt.datetime.now(dt.UTC)
    into_day = now - dt.datetime.combine(now.date(), dt.time(), dt.UTC)
    if into_day < dt.timedelta(seconds=15):
        time.sleep((dt.timedelta(seconds=15) - into_day).total_seconds())
        now = dt.datetime.now(dt.UTC)
    return now


def market_table(page: AppTest) -> pd.DataFrame:
    """The markets table (HTML) as data: symbol, price, change_pct, sparkline, in the
    page's order."""
    (table,) = [e for e in page.get("html") if MARKETS_CLASS in e.proto.body]
    return market_frame(table.proto.body)


def symbol_box(page: AppTest):  # type: ignore[no-untyped-def]
    return next(box for box in page.selectbox if box.label == "Symbol")


def heatmap_symbols(page: AppTest) -> list[str]:
    """The symbols of the heatmap's cells, in the page's order (the one HTML element)."""
    (heatmap,) = [e for e in page.get("html") if HEATMAP_CLASS in e.proto.body]
    return [cell["symbol"] for cell in heatmap_cells(heatmap.proto.body)]


def texts(page: AppTest) -> str:
    parts = [m.value for m in page.markdown] + [i.value for i in page.info]
    parts += [e.value for e in page.error] + [c.value for c in page.caption]
    return "\n".join(str(p) for p in parts)


def test_page_with_data(monkeypatch: pytest.MonkeyPatch, infrastructure: Settings) -> None:
    settings = unique_settings(infrastructure)
    now = past_midnight()
    seed_store(settings, now)
    page = run_page(monkeypatch, settings)
    markets = market_table(page)
    assert list(markets["symbol"]) == sorted([BTC, BRK, "MSFT", "AAPL"])  # subscribed + found
    row = markets.set_index("symbol").loc[BTC]
    assert row["price"] == 106.0
    # the session opens with the symbol's first bar of the UTC day: the published bars of
    # 20 and 15 minutes ago, then the tail's (its 14-minute bar replaces the stale one)
    opens = [(20, 100.0), (15, 101.0), (14, 103.0), (1, 104.0), (0, 106.0)]
    day_start = dt.datetime.combine(now.date(), dt.time(), dt.UTC)
    session_open = next(o for ago, o in opens if minute_of(now, ago) >= day_start)
    assert row["change_pct"] == pytest.approx((106.0 / session_open - 1) * 100)
    assert symbol_box(page).options == [BTC, BRK, "AAPL"]
    assert len(page.get("plotly_chart")) == 2  # candles and comparison
    assert sorted(heatmap_symbols(page)) == sorted([BTC, BRK, "AAPL"])
    assert page.query_params["symbol"] == BTC
    assert not page.error
    assert not [d for d in page.dataframe if "sparkline" in d.value.columns]  # HTML, not a grid

    # the order the control names, kept over the next refreshes
    assert page.segmented_control(key="markets_sort").value == MARKETS_SORTS[0]
    page.segmented_control(key="markets_sort").set_value("change ↓").run()
    assert not page.exception, [e.value for e in page.exception]
    changes = market_table(page)["change_pct"].dropna().tolist()
    assert changes == sorted(changes, reverse=True) and len(changes) >= 2
    page.run()
    assert page.segmented_control(key="markets_sort").value == "change ↓"
    assert market_table(page)["change_pct"].dropna().tolist() == changes

    page.radio(key="window").set_value("A past day").run()
    assert not page.exception
    past = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)).isoformat()
    assert page.selectbox(key="day").value.isoformat() == past
    assert f"Daily statistics · {past}" in [s.value for s in page.subheader]


def test_fifty_symbols_read_as_one_table_a_heatmap_and_a_shared_symbol(
    monkeypatch: pytest.MonkeyPatch, infrastructure: Settings
) -> None:
    """Finnhub's limit, odd spellings included: one sortable table row per symbol with its
    sparkline, one heatmap cell each, no tiles; the detailed symbol comes from the URL and
    goes back into it."""
    settings = unique_settings(infrastructure, "fifty")
    now = past_midnight()
    symbols = list(DEMO_50_TICKERS)
    trades = many_trades(now, symbols)
    write_lake(settings, trades)
    page = AppTest.from_file(str(APP), default_timeout=60)
    page.query_params["symbol"] = "OANDA:EUR_USD"
    page = run_page(monkeypatch, settings, page=page, FINNHUB_TICKERS=",".join(symbols).lower())
    markets = market_table(page).set_index("symbol")
    assert sorted(markets.index) == sorted(symbols)
    for i, symbol in enumerate(symbols):
        assert markets.loc[symbol, "change_pct"] == pytest.approx((i - 25) / 10)
        first, last = (t for t in trades if t.symbol == symbol)
        closes = [first.price, last.price] if first.ts.minute != last.ts.minute else [last.price]
        assert list(markets.loc[symbol, "sparkline"]) == pytest.approx(closes)
    assert not page.metric or all(m.label not in symbols for m in page.metric)  # no tiles
    shown = heatmap_symbols(page)
    assert sorted(shown) == sorted(symbols)  # one cell each, in its own spelling
    assert shown[0] == symbols[-1] and shown[-1] == symbols[0]  # biggest gain first
    assert symbol_box(page).value == "OANDA:EUR_USD"
    symbol_box(page).set_value("BINANCE:1000PEPEUSDT").run()
    assert not page.exception
    assert page.query_params["symbol"] == "BINANCE:1000PEPEUSDT"
    page.run()  # the next refresh keeps the choice
    assert symbol_box(page).value == "BINANCE:1000PEPEUSDT"


def test_page_without_data(monkeypatch: pytest.MonkeyPatch, infrastructure: Settings) -> None:
    page = run_page(monkeypatch, unique_settings(infrastructure, "nodata"))
    assert "is the producer running?" in texts(page)
    assert not page.error
    assert not page.get("plotly_chart")


def test_page_with_the_store_unreachable(
    monkeypatch: pytest.MonkeyPatch, infrastructure: Settings
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    page = run_page(monkeypatch, infrastructure, S3_ENDPOINT_URL=endpoint)
    assert len(page.error) == 1
    assert endpoint in page.error[0].value and "make status" in page.error[0].value


def test_page_with_bad_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    page = run_page(monkeypatch, settings, FRESHNESS_WARN_SECONDS="900")
    assert "FRESHNESS_WARN_SECONDS must be smaller" in page.error[0].value


def test_live_prices_and_tape_replace_the_lake_s_once_the_feed_reads_trades(
    monkeypatch: pytest.MonkeyPatch, infrastructure: Settings, topic: str
) -> None:
    """The lake says BTC 106.0; the feed then reads BTC at 107.0 and BRK.B: the markets,
    the chosen symbol's price and the tape say so and are marked live."""
    settings = unique_settings(infrastructure, "live")
    now = past_midnight()
    seed_store(settings, now)
    page = run_page(monkeypatch, settings, KAFKA_TOPIC=topic)  # starts the process's feed
    lake_change = market_table(page).set_index("symbol").loc[BTC, "change_pct"]
    session_open = 106.0 / (1 + lake_change / 100)
    feed = live.shared_feed(load_settings())
    wait_for("the feed to go live", lambda: feed.status().live, 30)
    # not older than the lake's newest BTC trade (5 s into now's minute): an older live
    # trade is rightly not shown, which failed this test in a minute's first seconds
    after_lake = int((minute_of(now, 0) + dt.timedelta(seconds=6)).timestamp() * 1000)
    ms = max(after_lake, int(time.time() * 1000))
    trades = [record(BTC, 107.0, ms), record(BTC, 107.5, ms + 1), record(BRK, 52.0, ms)]
    produce(infrastructure, topic, trades)
    wait_for("the trades", lambda: {BTC, BRK} <= set(feed.latest()), 30)
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    markets = market_table(page).set_index("symbol")
    assert markets.loc[BTC, "price"] == 107.5
    assert markets.loc[BTC, "change_pct"] == pytest.approx((107.5 / session_open - 1) * 100)
    assert markets.loc[BRK, "price"] == 52.0 and markets.loc["AAPL", "price"] == 200.0
    assert any("Markets today" in s.value and "live" in s.value for s in page.subheader)
    metrics = {m.label: m.value for m in page.metric}
    assert metrics["Last price"] == "107.50" and metrics["Price from"] == "live"
    assert metrics["Live feed"] == "live"
    (tape,) = [d.value for d in page.dataframe if "latency_ms" in d.value.columns]
    assert tape["price"].tolist() == [107.5, 107.0]  # the feed's, newest first
    assert any("Trade tape" in s.value and "live" in s.value for s in page.subheader)


def test_without_a_broker_the_page_says_so_and_shows_the_lake(
    monkeypatch: pytest.MonkeyPatch, infrastructure: Settings
) -> None:
    settings = unique_settings(infrastructure, "nobroker")
    now = past_midnight()
    seed_store(settings, now)
    nowhere = f"127.0.0.1:{closed_port()}"
    page = run_page(monkeypatch, settings, KAFKA_SERVER=nowhere)
    feed = live.shared_feed(load_settings())
    wait_for("unreachable", lambda: feed.status().state is FeedState.UNREACHABLE, 30)
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    (warning,) = page.warning
    assert f"KAFKA_SERVER={nowhere} is unreachable" in warning.value
    assert "from the lake" in warning.value
    assert market_table(page).set_index("symbol").loc[BTC, "price"] == 106.0
    metrics = {m.label: m.value for m in page.metric}
    assert (metrics["Live feed"], metrics["Price from"]) == ("down", "lake")
    (tape,) = [d.value for d in page.dataframe if "latency_ms" in d.value.columns]
    assert tape["price"].tolist()[0] == 106.0  # the lake's tape
