"""The producer: feed -> receive log (this thread) -> Kafka (the delivery thread).

The feed reader does as little as possible: receive a frame, append it to the durable
receive log, report health. Validation and Kafka writes happen in ``producer.delivery``
from the log, so a slow or absent broker never stops the reader, and a restart delivers
from the log what Kafka does not have yet. When the log cannot take a frame (full, or
the disk refuses writes) the reader stops reading, says why in its heartbeat and logs,
and resumes when there is room again: a frame is never dropped silently.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog
import websocket

from finpipe.contracts import TradeSource
from finpipe.health import producer_log_state
from finpipe.settings import Settings
from producer.counters import Counters
from producer.delivery import Delivery
from producer.errors import FatalError
from producer.feed import Backoff, feed_endpoint, open_feed, redact
from producer.frames import FrameProcessor, FrameResult
from producer.journal import Journal, JournalError

log = structlog.get_logger("producer")

HEARTBEAT_SECONDS = 5.0
SHUTDOWN_GRACE_SECONDS = 5.0
"""How long a stop keeps delivering; what is left stays in the log for the next start."""
HEALTHY_CONNECTION_SECONDS = 5.0
"""A connection that delivered frames this long resets the reconnect backoff."""
PAUSED_RETRY_SECONDS = 0.2
"""How often a paused reader tries the log again (Kafka's acknowledgements free space)."""
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


def open_journal(settings: Settings) -> Journal:
    """The receive log of these settings; FatalError naming the setting when unusable."""
    try:
        return Journal(
            settings.producer_log_path,
            max_bytes=settings.producer_log_max_mb * 1_000_000,
            segment_bytes=settings.producer_log_segment_mb * 1_000_000,
            flush_window_s=settings.producer_log_flush_ms / 1000,
            retention_s=settings.producer_log_retention_hours * 3600,
        )
    except JournalError as exc:
        raise FatalError(str(exc)) from None


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
        self.journal = open_journal(settings)
        self.delivery = Delivery(
            settings,
            self.journal,
            self.frames,
            self.counters,
            kafka_config,
            on_error_frame=self._note_error_frame,
        )
        self._stop = threading.Event()
        self._next_heartbeat = 0.0

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Returns the exit code: 0 after a clean stop (a backlog stays in the log)."""
        self.journal.start_flusher()
        self.delivery.start()
        log.info(
            "producer starting",
            feed=self.counters.feed_url,
            symbols=self.counters.subscribed,
            topic=self.delivery.topic,
            dlq=self.delivery.dlq_topic,
            log_dir=str(self.journal.directory),
            log_last_seq=self.journal.last_seq,
            log_acked_seq=self.delivery.acked_seq,
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
            clean = self.delivery.error is None
        finally:
            self._shutdown(final=clean)
        return 0 if clean else 1

    def _receive(self, ws: websocket.WebSocket, backoff: Backoff) -> bool:
        """Read until stopped or the socket dies; True when it died of silence."""
        silent_limit = self.settings.silent_socket_seconds
        connected_at = last_frame = time.monotonic()
        append, counters = self.journal.append, self.counters
        healthy = False
        while not self.stopping:
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
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
            now_ms = time.time_ns() // 1_000_000
            try:
                append(data, now_ms)
            except JournalError as exc:
                if not self._wait_for_room(data, now_ms, exc):
                    return False
            last_frame = time.monotonic()
            counters.frames += 1
            counters.last_frame_ts_ms = now_ms
            if counters.first_frame_ts_ms is None:
                counters.first_frame_ts_ms = now_ms
            if not healthy and last_frame - connected_at > HEALTHY_CONNECTION_SECONDS:
                healthy = True
                backoff.reset()
            if last_frame >= self._next_heartbeat:
                self._maybe_heartbeat(last_frame)
        return False

    def _wait_for_room(self, data: bytes, now_ms: int, exc: JournalError) -> bool:
        """Stop reading until the log takes the frame; False when stopped meanwhile."""
        reason = str(exc)
        self.counters.reading_paused = reason
        self._note_error(reason)
        self._maybe_heartbeat(time.monotonic(), force=True)
        while not self.stopping:
            self._pause(PAUSED_RETRY_SECONDS)
            try:
                self.journal.append(data, now_ms)
            except JournalError as again:
                self.counters.reading_paused = str(again)
                continue
            log.warning("the receive log takes frames again: reading resumes")
            self.counters.reading_paused = None
            return True
        self.counters.frames_not_logged += 1
        log.error(
            "stopped while the receive log refused writes: one received frame was not logged",
            frame_bytes=len(data),
            reason=reason,
        )
        return False

    def _note_error_frame(self, result: FrameResult) -> None:
        # Called by the delivery thread with the counters' lock held.
        c = self.counters
        message = redact(result.error_message or "", self.settings)
        c.last_error = f"feed error: {message}"
        if c.error_frames % ERROR_LOG_EVERY == 1:
            log.error(
                "the feed sent an error frame",
                message=message,
                symbols=c.subscribed,
                error_frames=c.error_frames,
            )

    # --- health, pauses, shutdown -------------------------------------------------------

    def health(self) -> dict[str, Any]:
        snapshot = self.counters.snapshot()
        snapshot.update(self.journal.usage())
        snapshot.update(self.delivery.status())
        snapshot["log_state"] = producer_log_state(snapshot)
        return snapshot

    def _maybe_heartbeat(self, now: float, *, force: bool = False) -> None:
        if now < self._next_heartbeat and not force:
            return
        self._next_heartbeat = now + HEARTBEAT_SECONDS
        if not self.delivery.alive and self.delivery.error is not None:
            self._note_error(f"the Kafka delivery loop failed: {self.delivery.error}")
            self.stop()
        snapshot = self.health()
        log.info("counters", **snapshot)
        if self.reporter is not None:
            self.reporter.heartbeat(snapshot)

    def _note_error(self, message: str) -> None:
        message = redact(message, self.settings)
        self.counters.errors += 1
        self.counters.last_error = message
        log.warning(message)

    def _pause(self, seconds: float) -> None:
        """Sleep between reconnects while still reporting health."""
        deadline = time.monotonic() + seconds
        while not self.stopping and (now := time.monotonic()) < deadline:
            self._stop.wait(min(0.2, deadline - now))
            self._maybe_heartbeat(time.monotonic())

    def _shutdown(self, *, final: bool) -> None:
        self.journal.flush()
        self.delivery.stop(SHUTDOWN_GRACE_SECONDS)
        self.journal.close()
        snapshot = self.health()
        if snapshot["backlog_records"]:
            log.warning(
                "producer stopped; records not yet in Kafka stay in the receive log and "
                "the next start delivers them",
                **snapshot,
            )
        else:
            log.info("producer stopped; everything delivered", **snapshot)
        if self.reporter is not None:
            if final:
                self.reporter.final(snapshot)
            else:
                self.reporter.heartbeat(snapshot)


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
