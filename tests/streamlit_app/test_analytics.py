"""The dashboard's SQL against a small hand-checked market (see dashboard_seed.py).

NOW = 14:30:20 UTC, 15-minute tail: cutoff 14:15:20, so bars from 14:16 on come from the
tail and earlier bars from the published summary.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from finpipe import summaries
from streamlit_app import analytics
from streamlit_app.lake_tail import TAIL_COLUMNS, TAIL_SCHEMA
from streamlit_app.store import Snapshot, empty_snapshot
from streamlit_app.windows import WindowChoice, resolve
from tests.streamlit_app.dashboard_seed import (
    AAPL,
    BRK,
    BTC,
    NOW,
    UTC,
    Trade,
    daily_table,
    lake_table,
    latest_table,
    ohlcv_table,
    past_ohlcv_table,
    tail_trades,
)

TODAY = NOW.date()
PAST = TODAY - dt.timedelta(days=3)


def at(hh: int, mm: int, ss: int = 0, day: dt.date = TODAY) -> pd.Timestamp:
    return pd.Timestamp(dt.datetime.combine(day, dt.time(hh, mm, ss), UTC))


def snapshot(*, with_tail: bool = True) -> Snapshot:
    return Snapshot(
        now=NOW,
        today=NOW.date(),
        ohlcv=pa.concat_tables([ohlcv_table(NOW), past_ohlcv_table(PAST)]),
        daily=pa.concat_tables([daily_table(NOW.date()), daily_table(PAST)]),
        latest=latest_table(NOW),
        tail=lake_table(tail_trades(NOW)).select(TAIL_COLUMNS).cast(TAIL_SCHEMA)
        if with_tail
        else TAIL_SCHEMA.empty_table(),
        tail_cutoff=NOW - dt.timedelta(minutes=15) if with_tail else None,
        summaries_refreshed_at=NOW - dt.timedelta(minutes=16),
    )


def rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    return [tuple(r) for r in frame[columns].itertuples(index=False)]


def test_candles_last_15_min_come_from_the_tail_with_vwap() -> None:
    window = resolve(WindowChoice.LAST_15_MIN, NOW)
    assert (window.start, window.end) == (at(14, 16), at(14, 31))
    bars = analytics.candles(snapshot(), BTC, window)
    assert rows(bars, ["minute", "open", "high", "low", "close", "volume", "trade_count"]) == [
        (at(14, 16), 103.0, 105.0, 103.0, 105.0, 4.0, 2),  # the stale summary bar is replaced
        (at(14, 29), 104.0, 104.0, 104.0, 104.0, 2.0, 1),
        (at(14, 30), 106.0, 106.0, 106.0, 106.0, 1.0, 1),
    ]
    assert bars["vwap"].tolist() == pytest.approx([418 / 4, 104.0, 106.0])
    # session VWAP accumulates the day's earlier summary bars (14:10, 14:15) too
    assert bars["session_vwap"].tolist() == pytest.approx(
        [(201 + 101 + 418) / 7, (720 + 208) / 9, (928 + 106) / 10]
    )


def test_candles_today_join_summary_and_tail() -> None:
    bars = analytics.candles(snapshot(), BTC, resolve(WindowChoice.TODAY, NOW))
    assert bars["minute"].tolist() == [at(14, 10), at(14, 15), at(14, 16), at(14, 29), at(14, 30)]
    assert bars["close"].tolist() == [101.0, 101.0, 105.0, 104.0, 106.0]


def test_candles_without_tail_use_the_summary_only() -> None:
    bars = analytics.candles(snapshot(with_tail=False), BTC, resolve(WindowChoice.TODAY, NOW))
    assert bars["close"].tolist() == [101.0, 101.0, 1.0]


def test_candles_of_a_past_day_and_the_window_bounds() -> None:
    window = resolve(WindowChoice.PAST_DAY, NOW, PAST)
    assert window.days == [PAST] and not window.live
    bars = analytics.candles(snapshot(), BTC, window)
    assert rows(bars, ["minute", "open", "close", "vwap"]) == [
        (at(12, 0, day=PAST), 90.0, 91.0, 91.0),
        (at(12, 1, day=PAST), 91.0, 94.0, 93.0),
    ]
    assert bars["session_vwap"].tolist() == pytest.approx([91.0, 370 / 4])
    hour = analytics.candles(snapshot(), BTC, resolve(WindowChoice.LAST_HOUR, NOW))
    assert hour["minute"].min() == at(14, 10)  # 13:31 <= minute; nothing of the past day


def test_symbol_with_a_dot_and_ties_broken_by_kafka_offset() -> None:
    bars = analytics.candles(snapshot(), BRK, resolve(WindowChoice.LAST_15_MIN, NOW))
    assert rows(bars, ["minute", "open", "close", "volume", "trade_count"]) == [
        (at(14, 20), 50.0, 51.0, 40.0, 2)
    ]
    assert bars["vwap"].tolist() == pytest.approx([(500 + 1530) / 40])


def test_symbol_is_a_bound_parameter_not_sql() -> None:
    evil = "x' OR '1'='1"
    assert analytics.candles(snapshot(), evil, resolve(WindowChoice.TODAY, NOW)).empty
    assert analytics.trade_tape(snapshot(), evil).empty


def test_price_tiles_latest_price_change_and_sparkline() -> None:
    tiles = analytics.price_tiles(snapshot(), [AAPL, BTC, BRK, "MSFT"]).set_index("symbol")
    assert tiles.loc[BTC, "price"] == 106.0  # the tail is newer than the summary's 100.5
    assert tiles.loc[BTC, "trade_ts"] == at(14, 30, 5)
    assert tiles.loc[BTC, "session_open"] == 100.0
    assert tiles.loc[BTC, "change_pct"] == pytest.approx(6.0)
    assert list(tiles.loc[BTC, "sparkline"]) == [101.0, 101.0, 105.0, 104.0, 106.0]
    assert tiles.loc[AAPL, "price"] == 200.0  # summary only
    assert tiles.loc[AAPL, "change_pct"] == pytest.approx((200 / 190 - 1) * 100)
    assert tiles.loc[BRK, "price"] == 51.0
    assert tiles.loc[BRK, "change_pct"] == pytest.approx(2.0)
    assert pd.isna(tiles.loc["MSFT", "price"]) and list(tiles.loc["MSFT", "sparkline"]) == []


def test_latest_price_ignores_other_days() -> None:
    snap = snapshot()
    yesterday = NOW - dt.timedelta(days=1)
    snap.latest = pa.concat_tables([latest_table(yesterday), latest_table(NOW)])
    tiles = analytics.price_tiles(snap, [AAPL]).set_index("symbol")
    assert tiles.loc[AAPL, "trade_ts"] == at(13, 59)


def test_freshness_and_latency_from_the_tail() -> None:
    fresh = analytics.lake_freshness(snapshot())
    assert fresh.newest_trade_ts == at(14, 30, 5)
    assert fresh.age_seconds == pytest.approx(15.0)
    # processed within the last 5 minutes: BTC 14:29:59 (100 ms) and 14:30:05 (300 ms)
    latency = analytics.end_to_end_latency(snapshot())
    assert latency.trades == 2
    assert latency.p50_ms == pytest.approx(200.0)
    assert latency.p95_ms == pytest.approx(290.0)


def batch(trades: list[tuple[dt.datetime, int]], processed: dt.datetime) -> list[Trade]:
    """One micro-batch committed at ``processed``: (trade time, offset) pairs, each received
    5 ms after it was made (``lake_table``)."""
    return [
        Trade(
            BTC,
            ts,
            100.0,
            1.0,
            offset,
            latency_ms=(processed - ts) // dt.timedelta(milliseconds=1) - 5,
        )
        for ts, offset in trades
    ]


def with_tail(trades: list[Trade]) -> Snapshot:
    snap = snapshot()
    snap.tail = lake_table(trades).select(TAIL_COLUMNS).cast(TAIL_SCHEMA)
    return snap


def test_latency_leaves_out_the_catch_up_of_a_restarted_writer() -> None:
    """The writer was down from 14:25:40 to 14:28:00 while trades arrived; its first batch
    (14:28:00) holds trades that waited up to 2 min 20 s. The tile counts what was received
    after that batch: two batches, 495 and 1,495 ms from receipt."""
    s = dt.timedelta(seconds=1)
    t0 = at(14, 25, 30).to_pydatetime()
    trades = batch([(t0, 1)], t0 + 10 * s)  # before the pause: 10 s, received 5 min ago
    trades += batch([(t0 + 20 * s + i * 10 * s, 2 + i) for i in range(13)], t0 + 150 * s)
    trades += batch([(t0 + 160 * s, 20)], t0 + 160.5 * s)
    trades += batch([(t0 + 170 * s, 21)], t0 + 171.5 * s)
    latency = analytics.end_to_end_latency(with_tail(trades))
    assert latency.since == t0 + 150 * s
    assert latency.trades == 2
    assert (latency.p50_ms, latency.p95_ms) == (pytest.approx(995.0), pytest.approx(1445.0))


def test_latency_counts_a_quiet_market_s_batches_and_slow_ones() -> None:
    """No batch for minutes because nothing traded is no restart; a slow batch (20 s) is
    the platform's latency and counts."""
    s = dt.timedelta(seconds=1)
    t0 = at(14, 26).to_pydatetime()
    trades = batch([(t0, 1)], t0 + 1 * s)
    trades += batch([(t0 + 120 * s, 2)], t0 + 121 * s)  # after two quiet minutes
    trades += batch([(t0 + 125 * s, 3), (t0 + 130 * s, 4)], t0 + 150 * s)  # slow: 20-25 s
    latency = analytics.end_to_end_latency(with_tail(trades))
    assert latency.since is None
    assert latency.trades == 4
    assert latency.p95_ms == pytest.approx(19_995 + 0.85 * 5_000)  # 995, 995, 19,995, 24,995


def test_latency_leaves_out_a_fresh_platform_s_first_batch() -> None:
    """A platform started 40 s ago: the producer received from the start, the writer's
    first batch came 40 s later (nothing earlier in the tail). Received after it: 295 ms."""
    s = dt.timedelta(seconds=1)
    t0 = at(14, 29, 40).to_pydatetime() - 40 * s
    trades = batch([(t0 + i * s, i) for i in range(40)], t0 + 40 * s)
    trades += batch([(t0 + 41 * s, 40)], t0 + 41.3 * s)
    latency = analytics.end_to_end_latency(with_tail(trades))
    assert latency.since == t0 + 40 * s
    assert (latency.trades, latency.p50_ms) == (1, pytest.approx(295.0))


def test_freshness_falls_back_to_the_summary_and_empty_is_none() -> None:
    fresh = analytics.lake_freshness(snapshot(with_tail=False))
    assert fresh.newest_trade_ts == at(14, 14)  # BTC's row in latest_prices
    assert fresh.age_seconds == pytest.approx(16 * 60 + 20)
    empty = empty_snapshot(NOW)
    assert analytics.lake_freshness(empty) == analytics.Freshness(None, None)
    assert analytics.end_to_end_latency(empty).trades == 0
    assert analytics.symbols_present(empty) == []
    assert analytics.candles(empty, BTC, resolve(WindowChoice.TODAY, NOW)).empty


def test_symbols_present_are_real_strings() -> None:
    assert analytics.symbols_present(snapshot()) == [AAPL, BTC, BRK]


def test_trade_tape_newest_first() -> None:
    tape = analytics.trade_tape(snapshot(), BTC, limit=3)
    assert tape["price"].tolist() == [106.0, 104.0, 105.0]
    assert tape["symbol"].unique().tolist() == [BTC]
    assert tape["latency_ms"].tolist() == [300, 100, 100]


def test_daily_stats_of_one_day() -> None:
    stats = analytics.daily_stats(snapshot(), PAST)
    assert stats["symbol"].tolist() == [AAPL, BTC]
    assert stats.set_index("symbol").loc[BTC, "vwap"] == pytest.approx(100.67)
    assert analytics.daily_stats(snapshot(), PAST - dt.timedelta(days=1)).empty


def test_normalized_prices() -> None:
    prices = analytics.normalized_prices(
        snapshot(), [BTC, BRK], resolve(WindowChoice.LAST_15_MIN, NOW)
    )
    by_symbol = {s: g["normalized"].tolist() for s, g in prices.groupby("symbol")}
    assert by_symbol[BTC] == pytest.approx([100.0, 104 / 105 * 100, 106 / 105 * 100])
    assert by_symbol[BRK] == pytest.approx([100.0])


def test_schemas_of_the_fixture_match_the_contracts() -> None:
    assert ohlcv_table(NOW).schema == summaries.SCHEMAS[summaries.OHLCV_1M]
    assert latest_table(NOW).schema == summaries.SCHEMAS[summaries.LATEST_PRICES]


# --- the shared tail bars and the process-wide database ---------------------------------


def test_trade_tape_longer_than_the_tail_returns_every_trade() -> None:
    tape = analytics.trade_tape(snapshot(), BTC, limit=50)
    # 14:15:30 lies before the tail's first full minute and still belongs to the tape
    assert tape["price"].tolist() == [106.0, 104.0, 105.0, 103.0, 101.0]
    assert tape["trade_ts"].iloc[-1] == at(14, 15, 30)


def test_trade_tape_same_millisecond_ordered_by_offset() -> None:
    tape = analytics.trade_tape(snapshot(), BRK, limit=1)
    assert rows(tape, ["price", "kafka_offset"]) == [(51.0, 8)]


def test_symbol_traded_only_before_the_tail_floor() -> None:
    """A trade in the tail's partial first minute counts for the latest price, freshness
    and the symbol list, but not for the bars (that minute comes from the summary)."""
    snap = snapshot()
    eth = "BINANCE:ETHUSDT"
    extra = tail_trades(NOW)[:0]
    extra.append(Trade(eth, at(14, 15, 40).to_pydatetime(), 3000.0, 2.0, 1, partition=2))
    snap.tail = pa.concat_tables(
        [snap.tail, lake_table(extra).select(TAIL_COLUMNS).cast(TAIL_SCHEMA)]
    )
    assert eth in analytics.symbols_present(snap)
    tile = analytics.price_tiles(snap, [eth]).set_index("symbol").loc[eth]
    assert (tile["price"], tile["trade_ts"]) == (3000.0, at(14, 15, 40))
    assert list(tile["sparkline"]) == []  # no bar: the partial minute is not the tail's
    assert analytics.candles(snap, eth, resolve(WindowChoice.TODAY, NOW)).empty


def test_tail_wins_a_tie_with_the_latest_prices_summary() -> None:
    snap = snapshot()
    day = NOW.date()
    tie = pa.table(
        {
            "trade_date": [day],
            "symbol": [BTC],
            "price": [999.0],
            "volume": [1.0],
            "trade_ts": [at(14, 30, 5).to_pydatetime()],
            "computed_ts": [NOW],
        }
    ).cast(summaries.SCHEMAS[summaries.LATEST_PRICES])
    snap.latest = pa.concat_tables([latest_table(NOW), tie])
    tile = analytics.price_tiles(snap, [BTC]).set_index("symbol").loc[BTC]
    assert tile["price"] == 106.0


def test_snapshots_on_the_process_database_do_not_see_each_other() -> None:
    with_tail, without_tail = snapshot(), snapshot(with_tail=False)
    today = resolve(WindowChoice.TODAY, NOW)
    first = analytics.candles(with_tail, BTC, today)
    assert analytics.candles(without_tail, BTC, today)["close"].tolist() == [101.0, 101.0, 1.0]
    assert analytics.candles(with_tail, BTC, today).equals(first)

    def tiles(snap: Snapshot) -> list[float]:
        return analytics.price_tiles(snap, [BTC])["price"].tolist()

    snaps = [snapshot(with_tail=i % 2 == 0) for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        prices = list(pool.map(tiles, snaps))
    assert prices == [[106.0] if i % 2 == 0 else [100.5] for i in range(8)]


# The definition the dashboard's bars must match: per symbol and minute, open/close are
# the first/last trade by (trade_ts, kafka_partition, kafka_offset).
REFERENCE_BARS = """
SELECT symbol, time_bucket(INTERVAL 1 minute, trade_ts) AS minute,
    arg_min(price, (trade_ts, kafka_partition, kafka_offset)) AS open,
    max(price) AS high, min(price) AS low,
    arg_max(price, (trade_ts, kafka_partition, kafka_offset)) AS close,
    sum(volume) AS volume, count(*) AS trade_count
FROM tail WHERE trade_ts >= $floor GROUP BY ALL ORDER BY symbol, minute
"""


def test_tail_bars_match_the_reference_on_ties_and_extreme_offsets() -> None:
    """Many trades per millisecond, partitions and offsets up to their type's limits: the
    packed ordering key must order them exactly like (trade_ts, partition, offset)."""
    rng = np.random.default_rng(11)
    n = 20_000
    start_ms = int((NOW - dt.timedelta(minutes=15)).timestamp() * 1000)
    ts = start_ms + rng.integers(0, 15 * 60_000, n) // 997 * 997  # coarse: many ties
    partition = rng.choice([0, 1, 7, 2**31 - 1], n).astype(np.int32)
    offset = rng.choice([0, 1, 2**40, 2**63 - 1], n) - rng.integers(0, 3, n)
    offset = np.maximum(offset, 0).astype(np.int64)
    as_ts = pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    tail = pa.table(
        {
            "symbol": rng.choice([BTC, BRK], n),
            "price": rng.integers(1, 1000, n).astype(float),
            "volume": np.ones(n),
            "trade_value": np.ones(n),
            "trade_ts": as_ts,
            "ingest_ts": as_ts,
            "processed_ts": as_ts,
            "conditions": pa.nulls(n, pa.list_(pa.string())),
            "kafka_partition": partition,
            "kafka_offset": offset,
        }
    ).cast(TAIL_SCHEMA)
    snap = empty_snapshot(NOW)
    snap.tail, snap.tail_cutoff = tail, NOW - dt.timedelta(minutes=15)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("tail", tail)
    floor = dt.datetime(2026, 3, 10, 14, 16, tzinfo=UTC)
    expected = con.execute(REFERENCE_BARS, {"floor": floor}).df()
    window = resolve(WindowChoice.LAST_15_MIN, NOW)
    columns = ["minute", "open", "high", "low", "close", "volume", "trade_count"]
    for symbol in (BTC, BRK):
        got = analytics.candles(snap, symbol, window)
        want = expected[expected["symbol"] == symbol]
        assert rows(got, columns) == rows(want, columns)
    last = con.execute(
        "SELECT symbol, arg_max(price, (trade_ts, kafka_partition, kafka_offset)) "
        "FROM tail GROUP BY symbol ORDER BY symbol"
    ).fetchall()
    tiles = analytics.price_tiles(snap, [BRK, BTC])
    assert rows(tiles, ["symbol", "price"]) == sorted(last)
