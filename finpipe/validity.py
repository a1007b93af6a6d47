"""What a valid trade is: the one rule of validity, by type *and* range.

The types are the contract's structs (``finpipe.contracts``, decoded by msgspec); this
module adds the ranges a well-typed value must also respect. The producer applies it to
every trade it receives and the Spark job to every Kafka record it reads, so a record
that passes one passes the other, whoever wrote it to the topic. ``contracts`` re-exports
these names.

"Now" is a parameter, never read here: the producer passes its receive time, the Spark
job its batch's planned time (fixed in the checkpoint, so a replayed batch judges every
record exactly as the first attempt did).
"""

from __future__ import annotations

import math

EPOCH_2000_MS = 946_684_800_000
"""Trades stamped before 2000-01-01 UTC are implausible (a seconds-not-millis mistake)."""
DEFAULT_FUTURE_TOLERANCE_MS = 3_600_000
"""How far a trade may be stamped ahead of the judge's clock by default (setting
``TRADE_FUTURE_TOLERANCE_SECONDS``). Past days are fine: a recorded session replays into
its own dates. Microsecond or nanosecond stamps land centuries ahead and fail it."""
MAX_SYMBOL_LENGTH = 64
"""Finnhub symbols are short (``BINANCE:BTCUSDT``); a longer one is not a symbol."""
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
"""JSON integers have no limit and msgspec decodes any of them; the lake stores int64."""


def symbol_problem(symbol: str) -> str | None:
    if not symbol:
        return "symbol is empty"
    if len(symbol) > MAX_SYMBOL_LENGTH:
        return f"symbol has {len(symbol)} characters (at most {MAX_SYMBOL_LENGTH})"
    # Every whitespace but the ASCII space is already not printable.
    if not symbol.isprintable() or " " in symbol:
        return f"symbol {symbol!r} holds whitespace or control characters"
    return None


def timestamp_problem(name: str, value: int, now_ms: int, future_tolerance_ms: int) -> str | None:
    """Why an epoch-milliseconds field is implausible, or None."""
    if not INT64_MIN <= value <= INT64_MAX:
        return f"{name} {value} does not fit in a 64-bit integer"
    if value < EPOCH_2000_MS:
        return f"{name} {value} ms is before 2000-01-01 (seconds instead of ms?)"
    if value > now_ms + future_tolerance_ms:
        ahead_s = (value - now_ms) / 1000
        return (
            f"{name} {value} ms is {ahead_s:.0f} s ahead of the clock (at most "
            f"{future_tolerance_ms / 1000:.0f} s; microseconds or nanoseconds instead of ms?)"
        )
    return None


_INF = math.inf


def is_valid_symbol(symbol: str) -> bool:
    return 0 < len(symbol) <= MAX_SYMBOL_LENGTH and symbol.isprintable() and " " not in symbol


def values_in_range(
    price: float,
    volume: float,
    trade_ts_ms: int,
    now_ms: int,
    future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_MS,
) -> bool:
    """The rule's numeric half: a caller that checks each distinct symbol once (the
    producer, against its subscribed symbols) calls only this per trade."""
    return (
        0.0 < price < _INF
        and 0.0 <= volume < _INF
        and price * volume < _INF
        and EPOCH_2000_MS <= trade_ts_ms <= now_ms + future_tolerance_ms
    )


def is_valid_trade(
    symbol: str,
    price: float,
    volume: float,
    trade_ts_ms: int,
    now_ms: int,
    future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_MS,
) -> bool:
    """The rule as one cheap predicate; ``trade_problem`` says why not."""
    return is_valid_symbol(symbol) and values_in_range(
        price, volume, trade_ts_ms, now_ms, future_tolerance_ms
    )


def trade_problem(
    symbol: str,
    price: float,
    volume: float,
    trade_ts_ms: int,
    now_ms: int,
    future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_MS,
) -> str | None:
    """Why a well-typed trade is not valid, or None when it is (same rule as above)."""
    if problem := symbol_problem(symbol):
        return problem
    # `not 0 < x` also catches NaN, which compares false with everything.
    if not 0.0 < price < math.inf:
        return f"price {price!r} is not positive and finite"
    if not 0.0 <= volume < math.inf:
        return f"volume {volume!r} is negative or not finite"
    if not price * volume < math.inf:
        return f"price x volume ({price!r} x {volume!r}) is not finite"
    return timestamp_problem("trade_ts_ms", trade_ts_ms, now_ms, future_tolerance_ms)
