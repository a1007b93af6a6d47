"""The simulator's pure parts: market model, protocol rules, replay pacing, faults."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from pathlib import Path

import msgspec
import pytest

from finpipe import contracts
from finpipe.contracts import RawTrade
from producer.frames import FrameProcessor
from producer.simulator import faults, protocol, replay
from producer.simulator.market import (
    DEMO_50_TICKERS,
    KNOWN_SYMBOLS,
    Market,
    is_valid_symbol,
    us_market_open,
)

NY = dt.timezone(dt.timedelta(hours=-5))  # New York in winter (EST)
SYMBOLS = ["BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "AAPL", "MSFT"]


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


def test_market_hours_are_the_new_york_regular_session() -> None:
    monday = dt.datetime(2025, 11, 24, tzinfo=NY)
    assert not us_market_open(monday.replace(hour=9, minute=29))
    assert us_market_open(monday.replace(hour=9, minute=30))
    assert us_market_open(monday.replace(hour=15, minute=59))
    assert not us_market_open(monday.replace(hour=16))
    assert not us_market_open(dt.datetime(2025, 11, 22, 12, tzinfo=NY))  # Saturday


def test_stocks_are_quiet_outside_market_hours_unless_told_otherwise() -> None:
    night = _ms(dt.datetime(2025, 11, 24, 22, tzinfo=NY))
    strict = Market(trades_per_second=50, seed=1, ignore_market_hours=False)
    symbols = {t["s"] for t in strict.tick(SYMBOLS, night, 1.0)}
    assert symbols == {"BINANCE:BTCUSDT", "BINANCE:ETHUSDT"}
    demo = Market(trades_per_second=50, seed=1, ignore_market_hours=True)
    assert {t["s"] for t in demo.tick(SYMBOLS, night, 1.0)} == set(SYMBOLS)


def test_generated_trades_are_valid_and_realistic() -> None:
    now = _ms(dt.datetime(2025, 11, 24, 12, tzinfo=NY))
    market = Market(trades_per_second=40, seed=3)
    trades = [t for _ in range(20) for t in market.tick(SYMBOLS, now, 0.5)]
    processor = FrameProcessor(SYMBOLS, "simulator")
    result = processor.process(protocol.trade_frame(trades), now_ms=now)
    assert not result.dead_letters and len(result.records) == len(trades) > 500
    parsed = [msgspec.convert(t, RawTrade) for t in trades]
    for t in parsed:
        start, _ = KNOWN_SYMBOLS[t.s]
        assert start / 2 < t.p < start * 2  # a GBM over seconds stays near its level
        assert now - 500 <= t.t <= now
        if t.s.startswith("BINANCE:"):
            assert t.c is None
        else:
            assert t.v == int(t.v)  # whole shares
            assert t.c is None or all(isinstance(code, str) for code in t.c)
    crypto_volumes = [t.v for t in parsed if t.s.startswith("BINANCE:")]
    assert any(v != int(v) for v in crypto_volumes)  # fractional coins
    assert any(t.c for t in parsed if t.s == "AAPL")


def test_bursts_raise_the_rate() -> None:
    now = _ms(dt.datetime(2025, 11, 24, 12, tzinfo=NY))
    calm = Market(trades_per_second=20, burst_probability=0.0, seed=5)
    stormy = Market(trades_per_second=20, burst_probability=1.0, burst_multiplier=10, seed=5)
    calm_n = sum(len(calm.tick(["AAPL"], now + i * 100, 0.1)) for i in range(50))
    stormy_n = sum(len(stormy.tick(["AAPL"], now + i * 100, 0.1)) for i in range(50))
    assert stormy_n > 4 * calm_n


@pytest.mark.parametrize(
    ("symbol", "valid"),
    [
        ("AAPL", True),
        ("BRK.B", True),
        ("BINANCE:BTCUSDT", True),
        ("OANDA:EUR_USD", True),
        ("aapl", False),
        ("", False),
        ("NOT A SYMBOL", False),
        ("XYZ$", False),
    ],
)
def test_symbol_validity(symbol: str, valid: bool) -> None:
    assert is_valid_symbol(symbol) is valid


def test_subscribe_unsubscribe_and_errors() -> None:
    session = protocol.Session()
    assert session.handle('{"type":"subscribe","symbol":"AAPL"}') == []
    assert session.handle('{"type":"subscribe","symbol":"AAPL"}') == []  # idempotent
    assert session.symbols == ["AAPL"]
    (error,) = session.handle('{"type":"subscribe","symbol":"XYZ$"}')
    assert msgspec.json.decode(error) == {"type": "error", "msg": "Invalid symbol XYZ$"}
    (error,) = session.handle("not json")
    assert "Invalid message" in error
    assert session.handle('{"type":"unsubscribe","symbol":"AAPL"}') == []
    assert session.symbols == []


def test_more_than_50_symbols_is_refused_with_finnhubs_text() -> None:
    session = protocol.Session()
    replies = [
        r for i in range(55) for r in session.handle(f'{{"type":"subscribe","symbol":"S{i}"}}')
    ]
    assert len(session.symbols) == protocol.MAX_SYMBOLS == 50
    assert replies == [protocol.error_frame("Subscribing to too many symbols")] * 5


def test_replay_paces_by_trade_time_and_speed(tmp_path: Path) -> None:
    lines = [
        '{"type":"trade","data":[{"p":1,"s":"AAPL","t":1000000000000,"v":1}]}',
        '{"type":"ping"}',
        '{"type":"trade","data":[{"p":1,"s":"AAPL","t":1000000004000,"v":1}]}',
        "garbage",
        '{"type":"trade","data":[{"p":1,"s":"AAPL","t":1000000002000,"v":1}]}',
    ]
    path = tmp_path / "session.jsonl"
    path.write_text("\n".join(lines) + "\n\n")
    frames = replay.load_frames(path)
    assert frames == lines
    assert [d for d, _ in replay.paced(frames, speed=2.0)] == [0.0, 0.0, 2.0, 2.0, 2.0]
    assert [d for d, _ in replay.paced(frames, speed=0)] == [0.0] * 5


def test_missing_replay_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="FINPIPE_REPLAY_FILE"):
        replay.load_frames(tmp_path / "nope.jsonl")


def test_each_garbage_frame_is_one_dead_letter() -> None:
    processor = FrameProcessor(["AAPL"], "simulator")
    results = [processor.process(f) for f in faults.garbage_frames("AAPL", 1_764_000_000_000)]
    assert [len(r.dead_letters) for r in results] == [1] * 6
    assert not any(r.records for r in results)


def test_fifty_symbols_in_odd_spellings_trade_and_make_safe_lake_folders() -> None:
    """A full connection (Finnhub's 50) of the demo list: every symbol subscribes, trades,
    passes the producer's validation and gets a partition folder that round-trips; the
    51st is refused as Finnhub refuses it."""
    symbols = list(DEMO_50_TICKERS)
    assert len(symbols) == protocol.MAX_SYMBOLS
    assert {"BINANCE:1000PEPEUSDT", "COINBASE:BTC-USD", "OANDA:EUR_USD", "BRK.B"} <= set(symbols)
    session = protocol.Session()
    for symbol in symbols:
        assert session.handle(msgspec.json.encode({"type": "subscribe", "symbol": symbol})) == []
    (error,) = session.handle('{"type":"subscribe","symbol":"IBMX"}')
    assert protocol.TOO_MANY_SYMBOLS in error
    now = _ms(dt.datetime(2025, 11, 24, 12, tzinfo=NY))
    market = Market(trades_per_second=20, seed=11)
    trades = [t for i in range(10) for t in market.tick(session.symbols, now + i * 500, 0.5)]
    assert {t["s"] for t in trades} == set(symbols)
    result = FrameProcessor(symbols, "simulator").process(protocol.trade_frame(trades), now_ms=now)
    assert not result.dead_letters and len(result.records) == len(trades)
    for t in trades:
        start, _ = KNOWN_SYMBOLS[t["s"]]
        assert start / 2 < t["p"] < start * 2
    folders = {contracts.quote_partition_value(s) for s in symbols}
    assert len(folders) == len(symbols)
    for value in folders:
        assert value and value.isascii() and not set(value) & set("/:\\ ?#*")
        assert urllib.parse.unquote(value) in symbols


def test_sub_dollar_and_forex_prices_move_on_a_fine_tick() -> None:
    now = _ms(dt.datetime(2025, 11, 24, 12, tzinfo=NY))
    market = Market(trades_per_second=50, seed=2)
    trades = [
        t
        for i in range(20)
        for t in market.tick(["OANDA:EUR_USD", "BINANCE:1000PEPEUSDT"], now + i * 500, 0.5)
    ]
    for symbol in ("OANDA:EUR_USD", "BINANCE:1000PEPEUSDT"):
        assert len({t["p"] for t in trades if t["s"] == symbol}) > 5
