"""The page's live layer: trades read from the Kafka topic directly, as kdb+ subscribers
read the tickerplant, while candles, statistics and history come from the lake and its
summaries (DESIGN.md section 9: live and durable are two paths on one page).

One :class:`LiveFeed` per dashboard process, shared by every session (``shared_feed``,
``st.cache_resource``): a thread with a confluent-kafka consumer assigned to every
partition of the trades topic at its end (no consumer group: nothing to join or commit;
what came before the dashboard started is the lake's to show). Per symbol it keeps the
newest trade and the last ``TAPE_ROWS`` (``MAX_SYMBOLS`` symbols at most, the least
recently traded forgotten first), so its memory is bounded whatever the topic holds.
Records are decoded and judged by the contract (``finpipe.contracts``): what the lake
would reject is not shown either.

When the broker cannot be reached (the first metadata request, or a probe after
``PROBE_SECONDS`` without a record, fails; or librdkafka reports all brokers down) the
feed says so in :meth:`LiveFeed.status`, with the setting to check, and the page shows
the lake instead. The consumer keeps its assignment and resumes where it stopped.
"""

from __future__ import annotations

import atexit
import collections
import datetime as dt
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import msgspec
import numpy as np
import pandas as pd
import streamlit as st
import structlog
from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

from finpipe import contracts
from finpipe.settings import Settings

log = structlog.get_logger(__name__)

TAPE_ROWS = 50  # the trade tape's rows (analytics.TRADE_TAPE_ROWS, the lake's tape)
MAX_SYMBOLS = 500  # Finnhub allows 50 per connection; the topic may hold replays too
POLL_SECONDS = 0.2
BATCH = 10_000  # records taken at most at once
PROBE_SECONDS = 2.0  # without a record for this long, the broker is asked for metadata
PROBE_TIMEOUT_SECONDS = 2.0
RETRY_SECONDS = 2.0
RATE_SECONDS = 5  # trades per second over this many whole seconds
ERROR_LOG_SECONDS = 60.0


class FeedState(StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    NO_TOPIC = "no topic"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class FeedStatus:
    state: FeedState
    message: str
    """For the page: what the feed does, or what is wrong and what to check."""
    trades_per_second: float = 0.0
    symbols: int = 0
    skipped: int = 0
    """Records read that are not valid trades (the contract's rule), since the start."""

    @property
    def live(self) -> bool:
        return self.state is FeedState.LIVE


class LiveTrade(NamedTuple):
    price: float
    volume: float
    trade_ts_ms: int
    ingest_ts_ms: int
    """The producer's receive time."""
    conditions: list[str] | None
    partition: int
    offset: int
    seen_ms: int
    """When this dashboard read it."""

    @property
    def order(self) -> tuple[int, int, int]:
        """Newest is last: by trade time, then the topic's order (as the lake's bars)."""
        return (self.trade_ts_ms, self.partition, self.offset)


@dataclass
class _SymbolTrades:
    recent: collections.deque[LiveTrade]
    newest: LiveTrade


class LiveFeed:
    """Start with :meth:`start`; safe to read from any thread."""

    def __init__(
        self,
        kafka_server: str,
        topic: str,
        future_tolerance_ms: int = contracts.DEFAULT_FUTURE_TOLERANCE_MS,
        *,
        tape_rows: int = TAPE_ROWS,
        max_symbols: int = MAX_SYMBOLS,
    ) -> None:
        self.kafka_server = kafka_server
        self.topic = topic
        self.future_tolerance_ms = future_tolerance_ms
        self.tape_rows = tape_rows
        self.max_symbols = max_symbols
        self._decoder = msgspec.json.Decoder(contracts.TradeRecord)
        self._lock = threading.Lock()
        self._symbols: collections.OrderedDict[str, _SymbolTrades] = collections.OrderedDict()
        self._state = FeedState.CONNECTING
        self._message = f"connecting to Kafka at KAFKA_SERVER={kafka_server}"
        self._rates: collections.deque[list[int]] = collections.deque(maxlen=RATE_SECONDS + 1)
        self._contact = 0.0
        self._partitions: list[int] = []
        self._skipped = 0
        self._next_error_log = 0.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-live", daemon=True)

    # --- reading ---------------------------------------------------------------------

    def status(self) -> FeedStatus:
        now = int(time.monotonic())
        with self._lock:
            done = [(second, n) for second, n in self._rates if now - RATE_SECONDS <= second < now]
            rate = sum(n for _, n in done) / (now - done[0][0]) if done else 0.0
            symbols, skipped = len(self._symbols), self._skipped
            return FeedStatus(self._state, self._message, rate, symbols, skipped)

    def latest(self) -> dict[str, LiveTrade]:
        """The newest trade of every symbol seen since the feed started."""
        with self._lock:
            return {symbol: trades.newest for symbol, trades in self._symbols.items()}

    def tape(self, symbol: str) -> list[LiveTrade]:
        """The symbol's last trades read, newest first."""
        with self._lock:
            trades = self._symbols.get(symbol)
            recent = list(trades.recent) if trades else []
        return sorted(recent, key=lambda t: t.order, reverse=True)

    # --- running ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> LiveFeed:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _config(self) -> dict[str, object]:
        return {
            "bootstrap.servers": self.kafka_server,
            # required by the client; never joined: the partitions are assigned
            "group.id": f"finpipe-dashboard-{uuid.uuid4().hex[:12]}",
            "client.id": "finpipe-dashboard",
            "enable.auto.commit": False,
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 100,  # a record waits at most this long in the broker
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self._on_error,  # logs them, once a minute at most
            "log_level": 2,  # librdkafka's own lines only when critical: one per reconnect
        }

    def _run(self) -> None:
        consumer: Consumer | None = None
        while not self._stopping.is_set():
            try:
                consumer = consumer or Consumer(self._config())
                if not self._partitions:
                    self._assign(consumer)
                    continue
                messages = self._next(consumer)
                if messages:
                    self._take(messages)
                elif time.monotonic() - self._contact > PROBE_SECONDS:
                    self._probe(consumer)
            except Exception as exc:  # the thread must live on: the page shows the lake
                self._set(FeedState.UNREACHABLE, self._unreachable(exc))
                # A new client next time: librdkafka can forget every broker when a lone
                # broker shuts down (see producer.delivery.Delivery._on_stats) and would
                # never connect again. A live page starts at the end of the topic anyway.
                _close_quietly(consumer)
                consumer, self._partitions = None, []
                self._stopping.wait(RETRY_SECONDS)
        _close_quietly(consumer)

    @staticmethod
    def _next(consumer: Consumer) -> list[Message]:
        """What the broker has sent, or else the next record within POLL_SECONDS. (A
        ``consume`` of a batch waits its whole timeout unless the batch fills: each trade
        would reach the page up to POLL_SECONDS late.)"""
        messages = consumer.consume(num_messages=BATCH, timeout=0)
        if messages:
            return messages
        message = consumer.poll(POLL_SECONDS)
        return [] if message is None else [message]

    def _metadata(self, consumer: Consumer) -> list[int] | None:
        """The topic's partitions; None when it does not exist (the state says so)."""
        topics = consumer.list_topics(self.topic, timeout=PROBE_TIMEOUT_SECONDS).topics
        found = topics.get(self.topic)
        self._contact = time.monotonic()
        if found is None or found.error is not None or not found.partitions:
            self._set(
                FeedState.NO_TOPIC,
                f"Kafka at KAFKA_SERVER={self.kafka_server} has no topic {self.topic} "
                "(KAFKA_TOPIC) yet: the producer creates it when it starts",
            )
            return None
        return sorted(found.partitions)

    def _assign(self, consumer: Consumer) -> None:
        partitions = self._metadata(consumer)
        if partitions is None:
            self._stopping.wait(RETRY_SECONDS)
            return
        consumer.assign([TopicPartition(self.topic, p, OFFSET_END) for p in partitions])
        self._partitions = partitions
        self._live()

    def _probe(self, consumer: Consumer) -> None:
        """Whether the broker answers when no record came; new partitions join at their end."""
        partitions = self._metadata(consumer)
        if partitions is None:
            return
        added = [p for p in partitions if p not in self._partitions]
        if added:
            consumer.incremental_assign([TopicPartition(self.topic, p, OFFSET_END) for p in added])
            self._partitions = partitions
        self._live()

    def _live(self) -> None:
        self._set(
            FeedState.LIVE,
            f"live from Kafka topic {self.topic} ({len(self._partitions)} partitions)",
        )

    def _take(self, messages: list[Message]) -> None:
        now_ms = int(time.time() * 1000)
        taken: list[tuple[str, LiveTrade]] = []
        for message in messages:
            if message.error() is not None:
                self._log_error(message.error())
                continue
            try:
                record = self._decoder.decode(message.value())
            except msgspec.MsgspecError:
                self._skipped += 1
                continue
            if contracts.record_problem(record, now_ms, self.future_tolerance_ms):
                self._skipped += 1
                continue
            trade = LiveTrade(
                record.price,
                record.volume,
                record.trade_ts_ms,
                record.ingest_ts_ms,
                record.conditions,
                message.partition(),
                message.offset(),
                now_ms,
            )
            taken.append((record.symbol, trade))
        if any(message.error() is None for message in messages):
            self._contact = time.monotonic()
        with self._lock:
            for symbol, trade in taken:
                self._keep(symbol, trade)
            second = int(time.monotonic())
            if self._rates and self._rates[-1][0] == second:
                self._rates[-1][1] += len(taken)
            else:
                self._rates.append([second, len(taken)])
        if self._state is not FeedState.LIVE:
            self._live()

    def _keep(self, symbol: str, trade: LiveTrade) -> None:
        known = self._symbols.get(symbol)
        if known is None:
            if len(self._symbols) >= self.max_symbols:
                self._symbols.popitem(last=False)
            recent = collections.deque([trade], maxlen=self.tape_rows)
            self._symbols[symbol] = _SymbolTrades(recent, trade)
            return
        known.recent.append(trade)
        if trade.order > known.newest.order:
            known.newest = trade
        self._symbols.move_to_end(symbol)

    def _set(self, state: FeedState, message: str) -> None:
        with self._lock:
            changed = state is not self._state
            self._state, self._message = state, message
        if changed:
            log.info("dashboard.live_feed", state=str(state), detail=message)

    def _unreachable(self, exc: BaseException | KafkaError) -> str:
        reason = exc.str() if isinstance(exc, KafkaError) else f"{type(exc).__name__}: {exc}"
        return (
            f"Kafka at KAFKA_SERVER={self.kafka_server} is unreachable ({reason[:160]}). "
            "Is the broker running (`make status`), and is KAFKA_SERVER right?"
        )

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._set(FeedState.UNREACHABLE, self._unreachable(error))
        self._log_error(error)

    def _log_error(self, error: KafkaError) -> None:
        now = time.monotonic()
        if now >= self._next_error_log:  # librdkafka reports every failed reconnect
            self._next_error_log = now + ERROR_LOG_SECONDS
            log.warning("dashboard.live_feed_error", error=error.str())


@st.cache_resource(show_spinner=False, on_release=LiveFeed.stop)
def _feed(kafka_server: str, topic: str, future_tolerance_ms: int) -> LiveFeed:
    feed = LiveFeed(kafka_server, topic, future_tolerance_ms).start()
    atexit.register(feed.stop)
    return feed


def shared_feed(settings: Settings) -> LiveFeed:
    """The process's one feed for these settings (every session's page and the launcher's
    warm-up, ``serve.py``)."""
    return _feed(settings.kafka_server, settings.kafka_topic, settings.trade_future_tolerance_ms)


def release_feeds() -> None:
    """Stop and forget every feed of the process (the next page starts a new one)."""
    _feed.clear()


# --- what the page shows ------------------------------------------------------------------


def with_live_prices(tiles: pd.DataFrame, latest: Mapping[str, LiveTrade]) -> pd.DataFrame:
    """The markets' tiles (``analytics.price_tiles``) with each symbol's live trade where it
    is not older than the lake's: its price and time, and the change since the session's
    open (the lake's first bar of the day). ``live`` says which rows; ``received_ts`` is the
    producer's receive time of a live row's trade."""
    trades = [latest.get(symbol) for symbol in tiles["symbol"]]
    known = np.array([t is not None for t in trades])
    price = np.array([t.price if t else np.nan for t in trades], dtype=float)
    traded = pd.to_datetime([t.trade_ts_ms if t else None for t in trades], unit="ms", utc=True)
    received = pd.to_datetime([t.ingest_ts_ms if t else None for t in trades], unit="ms", utc=True)
    shown_ts = pd.to_datetime(tiles["trade_ts"], utc=True)
    newer = known & ~(shown_ts.to_numpy() > traded.to_numpy())  # NaT compares False
    merged = tiles.assign(live=newer, received_ts=received.where(newer))
    merged["price"] = np.where(newer, price, tiles["price"])
    merged["trade_ts"] = shown_ts.where(~newer, traded)
    live_change = (price / tiles["session_open"].to_numpy(dtype=float) - 1) * 100
    merged["change_pct"] = np.where(newer, live_change, tiles["change_pct"])
    return merged


def tape_frame(trades: list[LiveTrade]) -> pd.DataFrame:
    """Live trades as the page's tape shows them (``analytics.trade_tape``'s columns, with
    ``latency_ms`` from the producer's receipt to this dashboard)."""
    return pd.DataFrame(
        {
            "trade_ts": pd.to_datetime([t.trade_ts_ms for t in trades], unit="ms", utc=True),
            "price": [t.price for t in trades],
            "volume": [t.volume for t in trades],
            "trade_value": [t.price * t.volume for t in trades],
            "conditions": [t.conditions for t in trades],
            "latency_ms": [t.seen_ms - t.ingest_ts_ms for t in trades],
        }
    )


def newest_received(frame: pd.DataFrame) -> dt.datetime | None:
    """The producer's receive time of the newest live trade shown, if any."""
    if "received_ts" not in frame or not frame["live"].any():
        return None
    return frame.loc[frame["live"], "received_ts"].max().to_pydatetime()


def _close_quietly(consumer: Consumer | None) -> None:
    if consumer is None:
        return
    try:
        consumer.close()
    except Exception as exc:  # a client that cannot close cleanly is dropped all the same
        log.debug("closing the live feed's Kafka client failed", error=str(exc))
