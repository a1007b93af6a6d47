"""The producer's health counters: what Dagster, `make status` and the tests read.

The books always balance: ``received == delivered + dead_lettered + in_flight +
delivery_failed``, where ``received`` counts every trade element that arrived plus every
frame that could not be read as a frame. Only Kafka's delivery reports move an item
from ``in_flight`` to ``delivered`` / ``dead_lettered``; ``delivery_failed`` stays 0
unless Kafka refused even the dead-letter topic, and then the log says so loudly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Counters:
    frames: int = 0
    trade_frames: int = 0
    pings: int = 0
    error_frames: int = 0
    malformed_frames: int = 0
    trades_received: int = 0
    received: int = 0
    produced: int = 0
    delivered: int = 0
    dead_letters_produced: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    delivery_failed: int = 0
    redirected_to_dlq: int = 0
    """Trade records whose delivery failed and that went to the dead-letter topic."""
    reconnects: int = 0
    silent_socket_reconnects: int = 0
    errors: int = 0
    kafka_errors: int = 0
    last_error: str | None = None
    last_trade_ts_ms: int | None = None
    first_frame_ts_ms: int | None = None
    last_frame_ts_ms: int | None = None
    last_delivery_ts_ms: int | None = None
    subscribed: list[str] = field(default_factory=list)
    feed_url: str = ""
    source: str = ""
    connected: bool = False

    def balanced(self) -> bool:
        return self.received == (
            self.delivered + self.dead_lettered + self.in_flight + self.delivery_failed
        )

    def snapshot(self) -> dict[str, Any]:
        data = asdict(self)
        data["balanced"] = self.balanced()
        return data
