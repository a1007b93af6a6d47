"""The producer's main loop: feed -> frames -> Kafka, with reconnects and health reports.

One thread does everything (receive, validate, queue, serve delivery reports, report
health), so the counters need no locks and the books balance at every heartbeat.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog
import websocket

from finpipe.contracts import TradeSource
from finpipe.settings import Settings
from producer.counters import Counters
from producer.errors import FatalError
from producer.feed import Backoff, feed_endpoint, open_feed, redact
from producer.frames import FrameProcessor, FrameResult
from producer.kafka_sink import KafkaSink

log = structlog.get_logger("producer")

HEARTBEAT_SECONDS = 5.0
SHUTDOWN_FLUSH_SECONDS = 30.0
ERROR_LOG_EVERY = 100
"""Repeated error frames are logged once per this many, so a chatty feed cannot flood."""

_CONNECTION_ERRORS = (
    websocket.WebSocketException,
    ConnectionError,
    OSError,
)


def source_of(settings: Settings) -> TradeSource:
    if not settings.uses_simulator:
        return "finnhub"
    return "replay" if settings.replay_file is not None else "simulator"


class TradeProducer:
    """Run with :meth:`run`; stop from any thread (or a signal handler) with :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        reporter: Any = None,
        kafka_config: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.reporter = reporter
        self.counters = Counters(
            subscribed=list(settings.finnhub_tickers),
            feed_url=feed_endpoint(settings)[1],
            source=source_of(settings),
        )
        self.frames = FrameProcessor(
            settings.finnhub_tickers, source_of(settings), settings.trade_future_tolerance_ms
        )
        self.sink = KafkaSink(settings, self.counters, kafka_config)
        self._stop = threading.Event()
        self._next_heartbeat = 0.0

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Returns the exit code: 0 after a clean stop with everything delivered."""
        self.sink.check_reachable(self.settings)
        log.info(
            "producer starting",
            feed=self.counters.feed_url,
            symbols=self.counters.subscribed,
            topic=self.sink.topic,
            dlq=self.sink.dlq_topic,
        )
        backoff = Backoff()
        clean = False
        try:
            while not self.stopping:
                try:
                    ws = open_feed(self.settings)
                except _CONNECTION_ERRORS as exc:
                    self._note_error(f"cannot connect to {self.counters.feed_url}: {exc}")
                    self._pause(backoff.next_delay())
                    continue
                self.counters.connected = True
                log.info("connected and subscribed", feed=self.counters.feed_url)
                try:
                    if self._receive(ws, backoff):
                        self.counters.silent_socket_reconnects += 1
                except _CONNECTION_ERRORS as exc:
                    self._note_error(f"connection lost: {type(exc).__name__}: {exc}")
                finally:
                    self.counters.connected = False
                    _close_quietly(ws)
                if not self.stopping:
                    self.counters.reconnects += 1
                    self._pause(backoff.next_delay())
            clean = True
        finally:
            # A fatal error still flushes what was queued, but is not a clean exit.
            remaining = self._shutdown(final=clean)
        return 0 if remaining == 0 else 1

    def _receive(self, ws: websocket.WebSocket, backoff: Backoff) -> bool:
        """Read until stopped or the socket dies; True when it died of silence."""
        silent_limit = self.settings.silent_socket_seconds
        last_frame = time.monotonic()
        process, write, poll = self.frames.process, self.sink.write, self.sink.poll
        counters = self.counters
        while not self.stopping:
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                poll(0)
                now = time.monotonic()
                self._maybe_heartbeat(now)
                if now - last_frame > silent_limit:
                    self._note_error(
                        f"no frame for {now - last_frame:.0f} s "
                        f"(PRODUCER_SILENT_SECONDS={silent_limit:g}): reconnecting"
                    )
                    return True
                continue
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ConnectionError("the server closed the connection")
            last_frame = time.monotonic()
            counters.frames += 1
            counters.last_frame_ts_ms = time.time_ns() // 1_000_000
            if counters.first_frame_ts_ms is None:
                counters.first_frame_ts_ms = counters.last_frame_ts_ms
            result = process(data)
            self._account(result)
            write(result)
            if result.kind == "trade" and result.records:
                backoff.reset()
            poll(0)
            if last_frame >= self._next_heartbeat:
                self._maybe_heartbeat(last_frame)
        return False

    def _account(self, result: FrameResult) -> None:
        c = self.counters
        c.received += result.accounted_items
        kind = result.kind
        if kind == "trade":
            c.trade_frames += 1
            c.trades_received += result.trades
        elif kind == "ping":
            c.pings += 1
        elif kind == "error":
            c.error_frames += 1
            message = redact(result.error_message or "", self.settings)
            c.last_error = f"feed error: {message}"
            if c.error_frames % ERROR_LOG_EVERY == 1:
                log.error(
                    "the feed sent an error frame",
                    message=message,
                    symbols=c.subscribed,
                    error_frames=c.error_frames,
                )
        else:
            c.malformed_frames += 1

    # --- health, pauses, shutdown -------------------------------------------------------

    def _maybe_heartbeat(self, now: float) -> None:
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + HEARTBEAT_SECONDS
        snapshot = self.counters.snapshot()
        log.info("counters", **snapshot)
        if self.reporter is not None:
            self.reporter.heartbeat(snapshot)

    def _note_error(self, message: str) -> None:
        message = redact(message, self.settings)
        self.counters.errors += 1
        self.counters.last_error = message
        log.warning(message)

    def _pause(self, seconds: float) -> None:
        """Sleep between reconnects while still serving delivery reports and heartbeats."""
        deadline = time.monotonic() + seconds
        while not self.stopping and (now := time.monotonic()) < deadline:
            self.sink.poll(min(0.2, deadline - now))
            self._maybe_heartbeat(time.monotonic())

    def _shutdown(self, *, final: bool) -> int:
        remaining = self.sink.flush(SHUTDOWN_FLUSH_SECONDS)
        snapshot = self.counters.snapshot()
        if remaining:
            log.error(
                "stopping with undelivered messages: Kafka did not confirm them in time",
                undelivered=remaining,
                **snapshot,
            )
        else:
            log.info("producer stopped; everything delivered", **snapshot)
        if self.reporter is not None:
            if final:
                self.reporter.final(snapshot)
            else:
                self.reporter.heartbeat(snapshot)
        return remaining


def _close_quietly(ws: websocket.WebSocket) -> None:
    try:
        ws.close(timeout=1)
    except _CONNECTION_ERRORS:
        ws.shutdown()


def run_producer(settings: Settings, reporter: Any = None) -> int:
    """Build and run a producer (used by the CLI); FatalError propagates to the caller."""
    producer = TradeProducer(settings, reporter)
    return producer.run()


__all__ = ["FatalError", "TradeProducer", "run_producer", "source_of"]
