"""Finnhub's client-message rules, as one connection's session state (pure, no I/O).

Clients send ``{"type":"subscribe","symbol":"AAPL"}`` / ``unsubscribe``; Finnhub answers
only problems, with error frames: an unknown symbol, or more than 50 symbols on one
connection ("Subscribing to too many symbols").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from producer.simulator.market import is_valid_symbol

MAX_SYMBOLS = 50
TOO_MANY_SYMBOLS = "Subscribing to too many symbols"
INVALID_SYMBOL = "Invalid symbol"
INVALID_MESSAGE = "Invalid message"

_ENCODER = msgspec.json.Encoder()


def error_frame(message: str) -> str:
    return _ENCODER.encode({"type": "error", "msg": message}).decode()


def ping_frame() -> str:
    return '{"type":"ping"}'


def trade_frame(trades: list[dict[str, object]]) -> str:
    return _ENCODER.encode({"type": "trade", "data": trades}).decode()


@dataclass
class Session:
    symbols: list[str] = field(default_factory=list)
    ever_subscribed: bool = False

    def handle(self, message: str | bytes) -> list[str]:
        """Apply one client message; returns the frames to send back (errors only)."""
        try:
            request = msgspec.json.decode(message)
        except msgspec.DecodeError:
            return [error_frame(INVALID_MESSAGE)]
        if not isinstance(request, dict):
            return [error_frame(INVALID_MESSAGE)]
        action, symbol = request.get("type"), request.get("symbol")
        if action not in ("subscribe", "unsubscribe"):
            return [error_frame(INVALID_MESSAGE)]
        if not isinstance(symbol, str) or not is_valid_symbol(symbol):
            return [error_frame(f"{INVALID_SYMBOL} {symbol}")]
        if action == "unsubscribe":
            if symbol in self.symbols:
                self.symbols.remove(symbol)
            return []
        self.ever_subscribed = True
        if symbol in self.symbols:
            return []
        if len(self.symbols) >= MAX_SYMBOLS:
            return [error_frame(TOO_MANY_SYMBOLS)]
        self.symbols.append(symbol)
        return []
