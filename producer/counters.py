"""The producer's health counters: what Dagster, `make status` and the tests read.

The books always balance: ``received == delivered + dead_lettered + in_flight``, where
``received`` counts every trade element that arrived plus every frame that could not be
read as a frame, and ``in_flight`` what is received but not yet confirmed by Kafka (it is
safe in the receive log meanwhile). Only Kafka's delivery reports (or, after a restart,
finding the item already in the topic) move an item to ``delivered`` / ``dead_lettered``.

Two threads write here: the feed reader (``frames``, connection fields) and the
delivery loop (everything parsed and delivered, under ``lock``), so a snapshot taken
under the lock is consistent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class Counters:
    frames: int = 0
    """Frames received from the feed and appended to the receive log."""
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
    refused_to_dlq: int = 0
    """Trade records the broker refused for good (e.g. too large for the topic): input
    the topic cannot hold, dead-lettered with the broker's reason. Never a timeout."""
    delivery_errors: int = 0
    """Failed delivery reports (broker away, timeouts): each is resent from the log."""
    resent_skipped: int = 0
    """Items found already in Kafka when delivery resumed, so not sent twice."""
    delivery_sessions: int = 0
    kafka_client_replacements: int = 0
    """Kafka clients replaced because they knew no broker any more (see ``Delivery``)."""
    frames_not_logged: int = 0
    """Frames received while the log refused writes and the producer was stopped: lost,
    and said so in the log. Stays 0 unless the log was full or unwritable at shutdown."""
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
    reading_paused: str | None = None
    """Why the producer stopped reading the feed (the log is full or unwritable)."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def balanced(self) -> bool:
        return self.received == self.delivered + self.dead_lettered + self.in_flight

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lock"}
            data["subscribed"] = list(self.subscribed)
            data["balanced"] = self.balanced()
        return data
