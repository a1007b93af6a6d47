"""The rule of validity: one predicate and one explanation that never disagree."""

from __future__ import annotations

import itertools
import math

import pytest

from finpipe import contracts
from finpipe.contracts import (
    DEFAULT_FUTURE_TOLERANCE_MS,
    EPOCH_2000_MS,
    MAX_SYMBOL_LENGTH,
    TradeRecord,
    is_valid_trade,
    record_problem,
    trade_problem,
)

NOW_MS = 1_780_000_000_000
SYMBOLS = ["AAPL", "BINANCE:BTCUSDT", "", " ", "A B", "A\tB", "A\u00a0B", "X" * MAX_SYMBOL_LENGTH]
SYMBOLS += ["X" * (MAX_SYMBOL_LENGTH + 1), "é", "AA\nPL"]
PRICES = [190.0, 1e-12, 0.0, -0.0, -1.0, math.inf, -math.inf, math.nan, 1e300]
VOLUMES = [0.0, 1.5, -1e-9, math.inf, math.nan, 1e300]
TIMESTAMPS = [
    NOW_MS,
    EPOCH_2000_MS,
    EPOCH_2000_MS - 1,
    NOW_MS // 1000,
    NOW_MS + DEFAULT_FUTURE_TOLERANCE_MS,
    NOW_MS + DEFAULT_FUTURE_TOLERANCE_MS + 1,
    NOW_MS * 1000,
    NOW_MS * 1_000_000,
    2**63,
    -(2**63) - 1,
    -1,
]


def test_the_predicate_and_the_explanation_agree_everywhere() -> None:
    for symbol, price, volume, ts in itertools.product(SYMBOLS, PRICES, VOLUMES, TIMESTAMPS):
        valid = is_valid_trade(symbol, price, volume, ts, NOW_MS)
        problem = trade_problem(symbol, price, volume, ts, NOW_MS)
        assert valid is (problem is None), (symbol, price, volume, ts, problem)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"symbol": ""}, "symbol is empty"),
        ({"symbol": "A B"}, "whitespace"),
        ({"symbol": "X" * (MAX_SYMBOL_LENGTH + 1)}, "at most"),
        ({"price": 0.0}, "price 0.0 is not positive"),
        ({"price": math.nan}, "price nan"),
        ({"volume": -1.0}, "volume -1.0"),
        ({"price": 1e300, "volume": 1e300}, "not finite"),
        ({"trade_ts_ms": EPOCH_2000_MS - 1}, "before 2000"),
        ({"trade_ts_ms": NOW_MS * 1000}, "ahead of the clock"),
        ({"trade_ts_ms": 2**63}, "64-bit"),
    ],
)
def test_each_violation_is_named(fields: dict[str, object], words: str) -> None:
    trade = {"symbol": "AAPL", "price": 1.0, "volume": 0.0, "trade_ts_ms": NOW_MS, **fields}
    problem = trade_problem(now_ms=NOW_MS, **trade)  # type: ignore[arg-type]
    assert problem is not None and words in problem, problem


def test_valid_edges_pass() -> None:
    assert trade_problem("AAPL", 1e-12, 0.0, EPOCH_2000_MS, NOW_MS) is None
    assert trade_problem("AAPL", 1.0, 0.0, NOW_MS + DEFAULT_FUTURE_TOLERANCE_MS, NOW_MS) is None
    # Past days are valid: a recorded session replays into its own dates.
    assert trade_problem("AAPL", 1.0, 0.0, NOW_MS - 86_400_000 * 365, NOW_MS) is None


def test_the_tolerance_is_a_parameter() -> None:
    ahead = NOW_MS + 10_000
    assert trade_problem("AAPL", 1.0, 1.0, ahead, NOW_MS, future_tolerance_ms=9_999)
    assert trade_problem("AAPL", 1.0, 1.0, ahead, NOW_MS, future_tolerance_ms=10_000) is None


def test_a_kafka_record_needs_a_plausible_ingest_time_too() -> None:
    good = TradeRecord("AAPL", 1.0, 1.0, NOW_MS, None, NOW_MS, "simulator")
    assert record_problem(good, NOW_MS) is None
    bad = TradeRecord("AAPL", 1.0, 1.0, NOW_MS, None, NOW_MS * 1_000_000, "simulator")
    assert "ingest_ts_ms" in (record_problem(bad, NOW_MS) or "")


def test_the_contracts_module_re_exports_the_rule() -> None:
    from finpipe import validity

    assert contracts.trade_problem is validity.trade_problem
    assert contracts.is_valid_trade is validity.is_valid_trade


def test_the_predicate_is_its_symbol_half_and_its_numeric_half() -> None:
    for symbol, price, volume, ts in itertools.product(SYMBOLS, PRICES, VOLUMES, TIMESTAMPS):
        both = contracts.is_valid_symbol(symbol) and contracts.values_in_range(
            price, volume, ts, NOW_MS
        )
        assert is_valid_trade(symbol, price, volume, ts, NOW_MS) is both
