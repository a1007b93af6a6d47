"""Parse, validate and flatten Finnhub server frames: the pure core of the producer.

One call, :meth:`FrameProcessor.process`, turns one WebSocket message into Kafka-ready
outputs. Every trade element that arrives ends up either as a trade record or as a dead
letter, and a frame that is not even a frame (garbage, truncated JSON, an unknown type)
becomes one dead letter; nothing is dropped silently.

The fast path decodes the whole frame straight into the typed contract structs
(``msgspec``, the fastest decoder measured: docs/benchmarks.md). Only when that fails
does the slow path look at each trade element on its own, so one bad trade does not cost
its good neighbours.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from finpipe.contracts import (
    DEFAULT_FUTURE_TOLERANCE_MS,
    DeadLetter,
    ErrorFrame,
    PingFrame,
    RawTrade,
    ServerFrame,
    TradeFrame,
    TradeRecord,
    TradeSource,
    is_valid_symbol,
    trade_problem,
    values_in_range,
)
from finpipe.contracts import (
    EPOCH_2000_MS as EPOCH_2000_MS,  # re-exported: the rule's names, where tests look
)

_FRAME_DECODER = msgspec.json.Decoder(ServerFrame)
_ANY_DECODER = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()


@dataclass(slots=True)
class FrameResult:
    """What one frame produced. ``kind`` is trade, ping, error or malformed."""

    kind: str
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(key, value) pairs for the trades topic: key = symbol, value = TradeRecord JSON."""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    trades: int = 0
    """Trade elements in the frame (valid or not); 0 for other kinds."""
    error_message: str | None = None
    last_trade_ts_ms: int | None = None

    @property
    def accounted_items(self) -> int:
        """Units this frame adds to ``received``: its trades, or 1 for a malformed frame."""
        return len(self.records) + len(self.dead_letters)


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "replace")


class FrameProcessor:
    """Validates frames against the subscribed symbols and stamps them with a source."""

    def __init__(
        self,
        symbols: Iterable[str],
        source: TradeSource,
        future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_MS,
    ) -> None:
        self.symbols = frozenset(symbols)
        self.source: TradeSource = source
        self.future_tolerance_ms = future_tolerance_ms
        # The rule's symbol half, once per subscribed symbol instead of once per trade.
        self._valid_symbols = frozenset(s for s in self.symbols if is_valid_symbol(s))
        self._keys = {s: s.encode() for s in self.symbols}

    def process(
        self, raw: bytes | str, now_ms: int | None = None, position_prefix: str | None = None
    ) -> FrameResult:
        """``position_prefix`` (``contracts.log_position_prefix``) stamps each trade record
        with its ``log_position``; dead letters get theirs when they are encoded
        (``encode_dead_letter``), as their index follows the frame's last trade."""
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        try:
            frame = _FRAME_DECODER.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return self._process_untyped(raw, now_ms, position_prefix)
        if isinstance(frame, TradeFrame):
            return self._trades(frame.data, now_ms, position_prefix)
        if isinstance(frame, PingFrame):
            return FrameResult("ping")
        assert isinstance(frame, ErrorFrame)
        return FrameResult("error", error_message=frame.msg)

    # --- trades ---------------------------------------------------------------------

    def trade_problem(self, trade: RawTrade, now_ms: int) -> str | None:
        """Why a (well-typed) trade is rejected, or None when it is valid: the contract's
        rule of validity, plus the producer's own "subscribed" rule."""
        if trade.s not in self.symbols:
            return f"symbol {trade.s!r} is not subscribed"
        return trade_problem(trade.s, trade.p, trade.v, trade.t, now_ms, self.future_tolerance_ms)

    def _trades(
        self, trades: list[RawTrade], now_ms: int, position_prefix: str | None = None
    ) -> FrameResult:
        result = FrameResult("trade", trades=len(trades))
        records, keys, encode, source = result.records, self._keys, _ENCODER.encode, self.source
        symbols, tolerance = self._valid_symbols, self.future_tolerance_ms
        # A record's item index is its place among the frame's records: len(records).
        positions = _positions(position_prefix, len(trades))
        last_ts = None
        for trade in trades:
            p, v, t = trade.p, trade.v, trade.t
            # The cheap predicate first; the exact reason is worked out only for rejects.
            if trade.s in symbols and values_in_range(p, v, t, now_ms, tolerance):
                position = positions[len(records)]
                record = TradeRecord(trade.s, p, v, t, trade.c, now_ms, source, position)
                records.append((keys[trade.s], encode(record)))
                if last_ts is None or t > last_ts:
                    last_ts = t
            else:
                reason = self.trade_problem(trade, now_ms) or "rejected"
                result.dead_letters.append(self._dead_letter(encode(trade), reason, now_ms))
        result.last_trade_ts_ms = last_ts
        return result

    # --- the slow path: the frame does not match the contract as a whole --------------

    def _process_untyped(
        self, raw: bytes | str, now_ms: int, position_prefix: str | None = None
    ) -> FrameResult:
        try:
            obj = _ANY_DECODER.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return self._malformed(raw, f"not JSON: {exc}", now_ms)
        if not isinstance(obj, dict):
            return self._malformed(
                raw, f"a frame must be a JSON object, got {type(obj).__name__}", now_ms
            )
        kind = obj.get("type")
        if kind == "trade":
            data = obj.get("data")
            if not isinstance(data, list):
                return self._malformed(raw, "trade frame without a 'data' list", now_ms)
            return self._untyped_trades(data, now_ms, position_prefix)
        if kind == "error":
            # An error frame whose msg is not a string: still surface it, never crash.
            return FrameResult("error", error_message=_text(raw))
        if kind == "ping":
            return FrameResult("ping")
        return self._malformed(raw, f"unknown frame type {kind!r}", now_ms)

    def _untyped_trades(
        self, data: list[Any], now_ms: int, position_prefix: str | None
    ) -> FrameResult:
        good: list[RawTrade] = []
        bad: list[DeadLetter] = []
        for item in data:
            try:
                good.append(msgspec.convert(item, RawTrade))
            except msgspec.ValidationError as exc:
                bad.append(
                    self._dead_letter(_ENCODER.encode(item), f"invalid trade: {exc}", now_ms)
                )
        result = self._trades(good, now_ms, position_prefix)
        result.trades = len(data)
        result.dead_letters.extend(bad)
        return result

    def _malformed(self, raw: bytes | str, reason: str, now_ms: int) -> FrameResult:
        return FrameResult("malformed", dead_letters=[self._dead_letter(raw, reason, now_ms)])

    def _dead_letter(self, raw: bytes | str, reason: str, now_ms: int) -> DeadLetter:
        return DeadLetter(raw=_text(raw), reason=reason, received_ts_ms=now_ms, source=self.source)


def encode_dead_letter(letter: DeadLetter, log_position: str | None = None) -> bytes:
    """The DLQ value; ``log_position`` (if given) replaces the letter's own."""
    if log_position is not None:
        letter = msgspec.structs.replace(letter, log_position=log_position)
    return _ENCODER.encode(letter)


_ITEM_TEXT = [str(i) for i in range(1024)]


def _positions(prefix: str | None, count: int) -> list[str] | list[None]:
    """``log_position`` of items ``0..count-1`` under ``prefix`` (None: no positions)."""
    global _ITEM_TEXT
    if prefix is None:
        return [None] * count
    if count > len(_ITEM_TEXT):
        _ITEM_TEXT = [str(i) for i in range(count)]
    return [prefix + text for text in _ITEM_TEXT[:count]]
