"""The dashboard's reader against the real test MinIO (unique prefixes per test)."""

from __future__ import annotations

import datetime as dt
import socket

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from structlog.testing import capture_logs

from finpipe import summaries
from finpipe.lake import s3_filesystem
from finpipe.settings import Settings
from streamlit_app import analytics, serve
from streamlit_app.store import Store, StoreUnavailable, shared_store
from streamlit_app.windows import WindowChoice, resolve
from tests.streamlit_app.dashboard_seed import (
    AAPL,
    BRK,
    BTC,
    Trade,
    latest_table,
    past_ohlcv_table,
    seed_now,
    seed_store,
    seeded_lake,
    tail_trades,
    unique_settings,
    write_lake,
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def seeded(infrastructure: Settings) -> tuple[Settings, dt.datetime]:
    settings = unique_settings(infrastructure)
    now = seed_now()
    seed_store(settings, now)
    return settings, now


def test_snapshot_reads_summaries_and_tail(seeded: tuple[Settings, dt.datetime]) -> None:
    settings, now = seeded
    store = Store(settings)
    snap = store.snapshot([now.date()], now)
    cutoff = now - dt.timedelta(minutes=settings.dashboard_tail_minutes)
    assert snap.tail.num_rows == sum(t.ts >= cutoff for t in tail_trades(now))
    assert snap.ohlcv.num_rows == 4 and snap.latest.num_rows == 2 and snap.daily.num_rows == 2
    assert snap.summaries_refreshed_at is not None
    assert analytics.symbols_present(snap) == [AAPL, BTC, BRK]
    tiles = analytics.price_tiles(snap, [BTC]).set_index("symbol")
    assert tiles.loc[BTC, "price"] == 106.0
    assert store.available_days() == [now.date(), now.date() - dt.timedelta(days=3)]


def test_tail_is_incremental_and_drops_what_left_the_window(
    seeded: tuple[Settings, dt.datetime],
) -> None:
    settings, now = seeded
    store = Store(settings)
    first = store.snapshot([], now)
    later = now + dt.timedelta(seconds=2)
    write_lake(settings, [Trade(BTC, later, 107.0, 1.0, 15)], first_batch=100)
    second = store.snapshot([], later)
    assert second.tail.num_rows == first.tail.num_rows + 1
    assert analytics.price_tiles(second, [BTC]).set_index("symbol").loc[BTC, "price"] == 107.0
    # An hour later every seeded object is older than the window: nothing is kept.
    gone = store.snapshot([], now + dt.timedelta(hours=1))
    assert gone.tail.num_rows == 0
    assert store.tail._tables == {}


def test_unreachable_store_raises_a_message_with_the_fix(infrastructure: Settings) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    settings = infrastructure.model_copy(update={"s3_endpoint_url": endpoint})
    with pytest.raises(StoreUnavailable) as info:
        Store(settings).snapshot([], dt.datetime.now(dt.UTC))
    assert endpoint in str(info.value) and "MinIO" in str(info.value)


def test_missing_prefixes_are_empty_not_errors(infrastructure: Settings) -> None:
    settings = unique_settings(infrastructure, "empty")
    now = dt.datetime.now(dt.UTC)
    store = Store(settings)
    snap = store.snapshot(resolve(WindowChoice.LAST_HOUR, now).days, now)
    assert snap.tail.num_rows == 0 and snap.ohlcv.num_rows == 0
    assert analytics.lake_freshness(snap).age_seconds is None
    assert store.available_days() == []


def test_the_launchers_warm_up_leaves_the_shared_store_holding_the_tail(
    seeded: tuple[Settings, dt.datetime],
) -> None:
    settings, _ = seeded
    serve.warm_store(settings)
    warm = shared_store(settings)  # the store the page's first run gets
    assert warm.tail._tables, "the warm-up read the lake's tail"
    now = dt.datetime.now(dt.UTC)
    first_page, fresh = warm.snapshot([], now), Store(settings).snapshot([], now)
    assert first_page.tail.num_rows == fresh.tail.num_rows > 0
    assert first_page.ohlcv.equals(fresh.ohlcv) and first_page.latest.equals(fresh.latest)


def test_a_summary_day_is_read_again_only_when_its_files_changed(
    seeded: tuple[Settings, dt.datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per refresh the store asks each table's log for a new version; only the days whose
    files a new version changed are read again, and "refreshed at" is the commit time of
    today's newest publish."""
    settings, now = seeded
    today, past = now.date(), now.date() - dt.timedelta(days=3)
    reads: list[tuple[str, tuple[dt.date, ...]]] = []
    day_rows = summaries.day_rows

    def counted(delta, name, days=None):  # type: ignore[no-untyped-def]
        reads.append((name, tuple(days)))
        return day_rows(delta, name, days)

    monkeypatch.setattr(summaries, "day_rows", counted)
    store = Store(settings)
    first = store.snapshot([past], now, with_tail=False)
    assert sorted(reads) == [
        (summaries.DAILY_SYMBOL_STATS, (past, today)),
        (summaries.LATEST_PRICES, (today,)),
        (summaries.OHLCV_1M, (past, today)),
    ]
    assert first.summaries_refreshed_at == newest_publish_time(settings, today)

    reads.clear()
    again = store.snapshot([past], now, with_tail=False)
    assert reads == []  # no table has a new version: nothing is read
    assert again.ohlcv.equals(first.ohlcv) and again.latest.equals(first.latest)

    # Another day of ohlcv_1m: a new version, but the days on screen kept their files.
    older = past - dt.timedelta(days=1)
    summaries.publish(
        settings, summaries.OHLCV_1M, older, past_ohlcv_table(older), source=seeded_lake(settings)
    )
    assert store.snapshot([past], now, with_tail=False).ohlcv.equals(first.ohlcv)
    assert reads == []

    # Today's latest prices again, with a new price: that day of that table is read.
    newer = latest_table(now)
    newer = newer.set_column(2, "price", pc.add(newer["price"], 1.0))
    summaries.publish(settings, summaries.LATEST_PRICES, today, newer, source=seeded_lake(settings))
    third = store.snapshot([past], now, with_tail=False)
    assert reads == [(summaries.LATEST_PRICES, (today,))]
    assert third.latest.equals(newer)
    assert third.summaries_refreshed_at == newest_publish_time(settings, today)
    assert third.summaries_refreshed_at > first.summaries_refreshed_at
    assert store.available_days() == [today, past, older]


def newest_publish_time(settings: Settings, day: dt.date) -> dt.datetime:
    """The commit time of the newest publish of ``day`` in any summary table."""
    times = []
    for name in summaries.NAMES:
        delta = summaries.open_table(settings, name)
        assert delta is not None
        times += [
            dt.datetime.fromtimestamp(c["timestamp"] / 1000, dt.UTC)
            for c in delta.history()
            if c.get(summaries.TRADE_DATE_KEY) == day.isoformat()
        ]
    return max(times)


def test_summaries_in_the_layout_before_delta_are_named_not_read(infrastructure: Settings) -> None:
    settings = unique_settings(infrastructure, "pre-delta")
    now = seed_now()
    key = (
        f"{settings.s3_bucket}/{settings.summaries_prefix}/{summaries.OHLCV_1M}/"
        f"trade_date={now.date()}/data.parquet"
    )
    with s3_filesystem(settings).open_output_stream(key) as out:
        pq.write_table(past_ohlcv_table(now.date()), out)
    store = Store(settings)
    with capture_logs() as logs:
        for _ in range(2):
            snap = store.snapshot([], now, with_tail=False)
            assert snap.ohlcv.num_rows == 0 and snap.summaries_refreshed_at is None
    assert store.available_days() == []
    [warning] = [e for e in logs if e["event"] == "dashboard.summaries_before_delta"]  # once
    assert "backfill of summaries_job" in warning["message"]
    assert str(now.date()) in warning["message"] and summaries.OHLCV_1M in warning["message"]
