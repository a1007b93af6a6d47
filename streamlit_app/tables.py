"""How the page's tables write their numbers and times (values in, text out), and the
columns they share.

* prices and volumes with thousands separators and the decimals the value has, never
  more than ``SIGNIFICANT_DIGITS`` significant digits (a price's magnitude sets its
  decimals: ``93,720.20``, ``164.0601``, ``1.08432``, ``0.0000123``; a share volume has
  none, a coin volume what it was traded in);
* traded values in millions or billions past a million, with the quote currency when the
  symbol names one (``63.05 M USD``);
* one time format everywhere, UTC (the column labels say so).

A table with numbers of several magnitudes in one column (50 symbols' daily prices) is
handed to ``st.dataframe`` as a pandas ``Styler``: the cells show this module's text, while
sorting a column still sorts by the numbers. The markets table is HTML
(``charts.markets_table``) and writes its cells with the same functions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler

SIGNIFICANT_DIGITS = 7
SYMBOL_WIDTH = 180  # px: the longest Finnhub spellings (BINANCE:1000PEPEUSDT) in full
TIME_FORMAT = "HH:mm:ss"  # st.column_config.DatetimeColumn's (moment.js) spelling
TIME_STRFTIME = "%H:%M:%S"  # the same for Python's datetimes
MISSING = "—"
# Quote currencies of concatenated crypto pairs (BINANCE:BTCUSDT), longest first.
_QUOTE_SUFFIXES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "EUR", "GBP", "JPY")
_PAIR_SEPARATORS = ("_", "-", "/")

Formatter = Callable[[object], str]


def is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def decimals(value: float, least: int = 0) -> int:
    """The decimals to write ``value`` with: as many as it has (its shortest exact
    representation), at least ``least``, at most what ``SIGNIFICANT_DIGITS`` allows at
    its magnitude (never fewer than ``least``)."""
    if value == 0 or not math.isfinite(value):
        return least
    exponent = Decimal(repr(float(value))).normalize().as_tuple().exponent
    own = max(0, -int(exponent))
    most = max(least, SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(value))))
    return min(max(own, least), most)


def number_text(value: object, least: int = 0) -> str:
    if is_missing(value):
        return MISSING
    number = float(value)  # type: ignore[arg-type]
    return f"{number:,.{decimals(number, least)}f}"


def price_text(value: object) -> str:
    """A price by its magnitude, at least cents: ``93,720.20``, ``164.0601``, ``0.018123``."""
    return number_text(value, 2)


def change_text(pct: object) -> str:
    """A change in percent with its sign and two decimals: ``+1.23 %``, ``-0.40 %``. (The
    live push writes the same in the browser: ``live_push.js``, ``changeText``.)"""
    if is_missing(pct):
        return MISSING
    return f"{float(pct):+.2f} %"  # type: ignore[arg-type]


def volume_text(value: object) -> str:
    """Shares without decimals, coins with theirs: ``273,981``, ``0.00008``."""
    return number_text(value, 0)


def money_text(value: object, currency: str | None = None) -> str:
    """A traded value, in millions or billions past a million, with its currency."""
    if is_missing(value):
        return MISSING
    number = float(value)  # type: ignore[arg-type]
    size = abs(number)
    if size >= 1e9:
        text = f"{number / 1e9:,.2f} B"
    elif size >= 1e6:
        text = f"{number / 1e6:,.2f} M"
    elif size >= 1e3:
        text = f"{number:,.0f}"
    else:
        text = f"{number:,.2f}"
    return f"{text} {currency}" if currency else text


def percent_text(fraction: object) -> str:
    """A fraction as a percentage (realized volatility 0.0123 -> ``1.23 %``)."""
    return MISSING if is_missing(fraction) else f"{float(fraction) * 100:.2f} %"  # type: ignore[arg-type]


def count_text(value: object) -> str:
    return MISSING if is_missing(value) else f"{int(value):,}"  # type: ignore[call-overload]


def conditions_text(codes: object) -> str:
    """Finnhub's trade condition codes, comma-separated; none is an empty cell."""
    if not pd.api.types.is_list_like(codes):  # None, NaN or pd.NA: no conditions
        return ""
    return ", ".join(str(code) for code in codes)  # type: ignore[union-attr]


def quote_currency(symbol: str) -> str | None:
    """The currency a symbol's prices are in, as far as its Finnhub spelling says:
    ``OANDA:USD_JPY`` JPY, ``COINBASE:BTC-USD`` USD, ``BINANCE:BTCUSDT`` USDT, a US share
    (no exchange prefix: ``AAPL``, ``BRK.B``) USD; None when the spelling does not say."""
    if ":" not in symbol:
        return "USD"
    pair = symbol.split(":", 1)[1]
    for separator in _PAIR_SEPARATORS:
        if separator in pair:
            return pair.rsplit(separator, 1)[1] or None
    return next((q for q in _QUOTE_SUFFIXES if pair.endswith(q) and pair != q), None)


def styled(
    frame: pd.DataFrame, formats: Mapping[str, Formatter], money: Iterable[str] = ()
) -> Styler:
    """``frame`` for ``st.dataframe`` with each column of ``formats`` written by its
    formatter, and the ``money`` columns as traded values in the currency of the row's
    ``symbol``. Missing values show as a dash."""
    style = frame.style.format(dict(formats), na_rep=MISSING)
    money = list(money)
    if money:
        currencies = frame["symbol"].map(lambda symbol: quote_currency(symbol) or "")
        for currency in currencies.unique():
            rows = frame.index[currencies == currency]
            style = style.format(
                functools.partial(money_text, currency=currency or None),
                subset=pd.IndexSlice[rows, money],
                na_rep=MISSING,
            )
    return style


def symbol_column() -> st.column_config.Column:
    """The symbol, pinned on the left, whole."""
    return st.column_config.TextColumn("symbol", pinned=True, width=SYMBOL_WIDTH)


def time_column(label: str) -> st.column_config.Column:
    return st.column_config.DatetimeColumn(f"{label} (UTC)", format=TIME_FORMAT)
