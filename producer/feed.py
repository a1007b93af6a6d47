"""The WebSocket side of the producer: connect, subscribe, receive, back off.

websocket-client is used with ``skip_utf8_validation=True``: its per-frame UTF-8 check is
pure Python and would cap the receive rate (docs/benchmarks.md), while msgspec validates
the bytes anyway. Frames are read as bytes (``recv_data``), so invalid UTF-8 is dead-lettered
instead of breaking the loop.
"""

from __future__ import annotations

import random
import urllib.parse
from dataclasses import dataclass

import msgspec
import websocket

from finpipe.settings import Settings
from producer.errors import FatalError

RECV_TIMEOUT_SECONDS = 1.0
"""How often a quiet receive returns control (stop flag, silence check, heartbeat)."""


def feed_endpoint(settings: Settings) -> tuple[str, str]:
    """(URL to connect to, the same URL safe to log): the token goes only in the first."""
    base = settings.feed_url
    if settings.finnhub_api_token is None:
        return base, base
    token = settings.finnhub_api_token.get_secret_value()
    query = urllib.parse.urlencode({"token": token})
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}{query}", f"{base}{sep}token=***"


def redact(text: str, settings: Settings) -> str:
    """Remove the token from any text headed for a log, an exception or a counter."""
    if settings.finnhub_api_token is None:
        return text
    token = settings.finnhub_api_token.get_secret_value()
    for form in {token, urllib.parse.quote(token, safe=""), urllib.parse.quote_plus(token)}:
        if form:
            text = text.replace(form, "***")
    return text


@dataclass
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog's recommendation)."""

    base: float = 0.5
    cap: float = 30.0
    attempt: int = 0
    rng: random.Random | None = None

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return (self.rng or random).uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


_SUBSCRIBE = msgspec.json.Encoder()


def subscribe_message(symbol: str, action: str = "subscribe") -> bytes:
    return _SUBSCRIBE.encode({"type": action, "symbol": symbol})


def open_feed(settings: Settings, connect_timeout: float = 10.0) -> websocket.WebSocket:
    """Connect and subscribe to every ticker; 401 becomes a FatalError naming the token."""
    url, safe_url = feed_endpoint(settings)
    try:
        ws = websocket.create_connection(
            url,
            timeout=connect_timeout,
            skip_utf8_validation=True,
            enable_multithread=False,
        )
    except websocket.WebSocketBadStatusException as exc:
        if exc.status_code in (401, 403):
            raise FatalError(
                f"{safe_url} refused the handshake with HTTP {exc.status_code}: "
                "FINNHUB_API_TOKEN is wrong or expired; set it to a valid Finnhub API key "
                "(or unset it to use the local simulator)"
            ) from None
        raise ConnectionError(
            redact(f"{safe_url} answered the handshake with HTTP {exc.status_code}", settings)
        ) from None
    ws.settimeout(RECV_TIMEOUT_SECONDS)
    for symbol in settings.finnhub_tickers:
        ws.send(subscribe_message(symbol), opcode=websocket.ABNF.OPCODE_TEXT)
    return ws
