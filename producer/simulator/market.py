"""Synthetic market data that looks like Finnhub's: the simulator's pure core.

Each symbol follows a geometric Brownian motion around a realistic starting price;
trades arrive as a Poisson process whose rate jumps during bursts; crypto volumes are
fractional, share volumes integral (round and odd lots, and Finnhub's volume-0 price
updates); stocks carry condition codes and trade only during US market hours unless
told to ignore them.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
MARKET_OPEN = dt.time(9, 30)
MARKET_CLOSE = dt.time(16, 0)
SECONDS_PER_YEAR = 365.25 * 24 * 3600

# Realistic levels (late 2025) and annualized volatilities: 50 symbols, Finnhub's limit
# per connection, in the spellings of its exchanges (Binance, Coinbase, Kraken, OANDA
# forex, US share classes with a dot).
KNOWN_SYMBOLS: dict[str, tuple[float, float]] = {
    "BINANCE:BTCUSDT": (95_000.0, 0.55),
    "BINANCE:ETHUSDT": (3_300.0, 0.70),
    "BINANCE:SOLUSDT": (180.0, 0.90),
    "BINANCE:BNBUSDT": (650.0, 0.60),
    "BINANCE:XRPUSDT": (2.2, 0.90),
    "BINANCE:DOGEUSDT": (0.35, 1.00),
    "BINANCE:ADAUSDT": (0.95, 0.95),
    "BINANCE:AVAXUSDT": (38.0, 1.00),
    "BINANCE:LINKUSDT": (22.0, 0.95),
    "BINANCE:LTCUSDT": (105.0, 0.80),
    "BINANCE:1000PEPEUSDT": (0.018, 1.40),
    "BINANCE:1000SHIBUSDT": (0.022, 1.20),
    "COINBASE:BTC-USD": (95_000.0, 0.55),
    "COINBASE:ETH-USD": (3_300.0, 0.70),
    "KRAKEN:XXBTZUSD": (95_000.0, 0.55),
    "OANDA:EUR_USD": (1.08, 0.08),
    "OANDA:GBP_USD": (1.27, 0.08),
    "OANDA:USD_JPY": (151.0, 0.10),
    "AAPL": (230.0, 0.25),
    "MSFT": (420.0, 0.25),
    "AMZN": (210.0, 0.32),
    "NVDA": (140.0, 0.50),
    "GOOGL": (175.0, 0.30),
    "META": (580.0, 0.35),
    "TSLA": (330.0, 0.60),
    "BRK.B": (470.0, 0.18),
    "BF.B": (42.0, 0.30),
    "JPM": (240.0, 0.25),
    "V": (310.0, 0.20),
    "MA": (520.0, 0.22),
    "UNH": (560.0, 0.30),
    "XOM": (118.0, 0.25),
    "JNJ": (155.0, 0.18),
    "WMT": (90.0, 0.20),
    "PG": (170.0, 0.16),
    "HD": (410.0, 0.24),
    "COST": (920.0, 0.22),
    "AVGO": (170.0, 0.45),
    "AMD": (140.0, 0.50),
    "NFLX": (880.0, 0.35),
    "ADBE": (520.0, 0.32),
    "CRM": (330.0, 0.33),
    "ORCL": (180.0, 0.32),
    "INTC": (23.0, 0.45),
    "CSCO": (58.0, 0.22),
    "PEP": (155.0, 0.18),
    "KO": (63.0, 0.15),
    "DIS": (112.0, 0.28),
    "BA": (170.0, 0.40),
    "IBM": (225.0, 0.24),
}
DEMO_50_TICKERS = tuple(KNOWN_SYMBOLS)
"""A full connection's worth of symbols with realistic levels (``FINNHUB_TICKERS``)."""
STOCK_CONDITIONS: tuple[tuple[str, ...] | None, ...] = (
    ("1",),
    ("1",),
    ("1",),
    ("1", "12"),
    ("12",),
    ("1", "24"),
    ("1", "8"),
    ("37",),
    None,
)
_STOCK = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")
_PREFIXED = re.compile(r"^[A-Z][A-Z0-9]{0,19}:[A-Z0-9_.\-]{1,24}$")


def is_valid_symbol(symbol: str) -> bool:
    """What the simulator accepts: known symbols and anything shaped like a Finnhub one."""
    return symbol in KNOWN_SYMBOLS or bool(_STOCK.match(symbol) or _PREFIXED.match(symbol))


def is_stock(symbol: str) -> bool:
    return ":" not in symbol


def is_crypto(symbol: str) -> bool:
    return symbol.startswith(("BINANCE:", "COINBASE:", "KRAKEN:", "BITFINEX:"))


def us_market_open(when: dt.datetime) -> bool:
    """Regular session, Monday to Friday 9:30-16:00 New York time (holidays ignored)."""
    local = when.astimezone(NEW_YORK)
    return local.weekday() < 5 and MARKET_OPEN <= local.time() < MARKET_CLOSE


def _starting_point(symbol: str) -> tuple[float, float]:
    if symbol in KNOWN_SYMBOLS:
        return KNOWN_SYMBOLS[symbol]
    seeded = random.Random(symbol)  # unknown symbols get a stable, plausible level
    return round(seeded.uniform(5, 500), 2), 0.4


@dataclass
class SymbolProcess:
    symbol: str
    price: float
    volatility: float
    stock: bool
    crypto: bool

    def step(self, rng: random.Random, seconds: float) -> float:
        """One GBM step (zero drift): price *= exp(-s^2/2 dt + s sqrt(dt) Z)."""
        years = max(seconds, 1e-6) / SECONDS_PER_YEAR
        sigma = self.volatility
        self.price *= math.exp(
            -0.5 * sigma * sigma * years + sigma * math.sqrt(years) * rng.gauss()
        )
        return self.price

    def quote(self) -> float:
        """The price on the symbol's tick: cents for shares over a dollar, six significant
        digits elsewhere (BTC 0.1, EUR/USD 0.00001, a 1000PEPE contract 0.0000001)."""
        if self.stock and self.price >= 1:
            tick = 0.01
        else:
            tick = 10.0 ** (math.floor(math.log10(self.price)) - 5)
        return max(tick, round(round(self.price / tick) * tick, 10))

    def volume(self, rng: random.Random) -> float:
        if self.stock:
            if rng.random() < 0.03:
                return 0.0  # Finnhub's price-only updates
            if rng.random() < 0.6:
                return float(rng.randint(1, 99))  # odd lots
            return float(100 * rng.choice((1, 1, 1, 2, 3, 5, 10)))
        notional = rng.lognormvariate(math.log(300.0), 1.6)  # USD-ish size of a fill
        return round(notional / self.price, 8) or 1e-8

    def conditions(self, rng: random.Random) -> list[str] | None:
        if not self.stock:
            return None
        chosen = rng.choice(STOCK_CONDITIONS)
        return list(chosen) if chosen is not None else None


@dataclass
class Market:
    """Generates the trades of one tick for a set of subscribed symbols."""

    trades_per_second: float = 10.0
    """Mean rate per symbol outside bursts."""
    burst_probability: float = 0.002
    """Chance per tick that a symbol starts a burst."""
    burst_multiplier: float = 10.0
    burst_seconds: float = 3.0
    ignore_market_hours: bool = True
    seed: int | None = None
    processes: dict[str, SymbolProcess] = field(default_factory=dict)
    _bursts: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def process_for(self, symbol: str) -> SymbolProcess:
        if symbol not in self.processes:
            price, vol = _starting_point(symbol)
            self.processes[symbol] = SymbolProcess(
                symbol, price, vol, stock=is_stock(symbol), crypto=is_crypto(symbol)
            )
        return self.processes[symbol]

    def trading(self, symbol: str, now: dt.datetime) -> bool:
        return not is_stock(symbol) or self.ignore_market_hours or us_market_open(now)

    def tick(self, symbols: list[str], now_ms: int, seconds: float) -> list[dict[str, object]]:
        """The trades of the ``seconds`` ending at ``now_ms``, as Finnhub ``data`` items."""
        now = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)
        rng = self.rng
        trades: list[dict[str, object]] = []
        for symbol in symbols:
            if not self.trading(symbol, now):
                continue
            proc = self.process_for(symbol)
            rate = self.trades_per_second
            burst_until = self._bursts.get(symbol, 0.0)
            if burst_until > now_ms:
                rate *= self.burst_multiplier
            elif rng.random() < self.burst_probability:
                self._bursts[symbol] = now_ms + self.burst_seconds * 1000
            count = _poisson(rng, rate * seconds)
            if count == 0:
                proc.step(rng, seconds)
                continue
            stamps = sorted(now_ms - int(rng.random() * seconds * 1000) for _ in range(count))
            gap = seconds / count
            for stamp in stamps:
                proc.step(rng, gap)
                trades.append(
                    {
                        "p": proc.quote(),
                        "s": symbol,
                        "t": stamp,
                        "v": proc.volume(rng),
                        "c": proc.conditions(rng),
                    }
                )
        return trades


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:  # normal approximation keeps big bursts cheap
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k
