"""How the page's tables write numbers: decimals by magnitude, separators, units."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from streamlit_app import tables


@pytest.mark.parametrize(
    ("price", "text"),
    [
        (93720.2, "93,720.20"),  # at least cents, thousands grouped
        (164.0601, "164.0601"),  # a real sub-penny stock print keeps its decimals
        (230.1, "230.10"),
        (1.08432, "1.08432"),  # EUR/USD's five decimals
        (0.0181234, "0.0181234"),
        (0.00001234, "0.00001234"),  # never a 0.00 for a small coin
        (1234567.891, "1,234,567.89"),
        (100.00000000000001, "100.0000"),  # float noise is cut at 7 significant digits
    ],
)
def test_prices_by_their_magnitude(price: float, text: str) -> None:
    assert tables.price_text(price) == text


@pytest.mark.parametrize(
    ("volume", "text"),
    [
        (273981.0, "273,981"),
        (0.00008, "0.00008"),
        (189265712.2604, "189,265,712"),
        (1234.56789123, "1,234.568"),
        (0.0, "0"),
    ],
)
def test_volumes_group_thousands_and_keep_coin_decimals(volume: float, text: str) -> None:
    assert tables.volume_text(volume) == text


def test_traded_values_carry_a_scale_and_a_unit() -> None:
    assert tables.money_text(63045940.0, "USD") == "63.05 M USD"
    assert tables.money_text(2.5e9, "USDT") == "2.50 B USDT"
    assert tables.money_text(273981.4, "USD") == "273,981 USD"
    assert tables.money_text(33.466, None) == "33.47"


def test_missing_values_show_a_dash_everywhere() -> None:
    for text in (tables.price_text, tables.volume_text, tables.money_text, tables.count_text):
        assert text(float("nan")) == tables.MISSING
        assert text(None) == tables.MISSING
    assert tables.percent_text(math.nan) == tables.MISSING
    assert tables.percent_text(0.0123) == "1.23 %"
    assert tables.count_text(3248) == "3,248"


def test_conditions_are_comma_separated_and_none_is_empty() -> None:
    assert tables.conditions_text(np.array(["1", "8", "24"])) == "1, 8, 24"
    assert tables.conditions_text(["12"]) == "12"
    assert tables.conditions_text(None) == ""
    assert tables.conditions_text(math.nan) == ""  # pandas' missing lists
    assert tables.conditions_text(pd.NA) == ""


@pytest.mark.parametrize(
    ("symbol", "currency"),
    [
        ("AAPL", "USD"),
        ("BRK.B", "USD"),
        ("BINANCE:BTCUSDT", "USDT"),
        ("BINANCE:1000PEPEUSDT", "USDT"),
        ("BINANCE:ETHFDUSD", "FDUSD"),
        ("COINBASE:BTC-USD", "USD"),
        ("KRAKEN:XXBTZUSD", "USD"),
        ("OANDA:EUR_USD", "USD"),
        ("OANDA:USD_JPY", "JPY"),
        ("BINANCE:ETHBTC", None),  # not a quote currency it knows: no unit, not a wrong one
        ("OANDA:XAU_", None),
    ],
)
def test_quote_currency_from_the_finnhub_spelling(symbol: str, currency: str | None) -> None:
    assert tables.quote_currency(symbol) == currency


def test_styled_writes_each_column_and_values_in_their_row_s_currency() -> None:
    frame = pd.DataFrame(
        {
            "symbol": ["AAPL", "OANDA:USD_JPY", "BINANCE:ETHBTC"],
            "price": [230.1, math.nan, 0.05],
            "value": [63045940.0, 1500.0, math.nan],
        }
    )
    style = tables.styled(
        frame,
        {"price": tables.price_text},
        money=["value"],
    )
    html = style.to_html()
    for text in ("230.10", tables.MISSING, "63.05 M USD", "1,500 JPY"):
        assert text in html
    assert html.count(tables.MISSING) == 2 and "nan" not in html
    assert style.data["price"].iloc[0] == 230.1  # sorting still sees the number
