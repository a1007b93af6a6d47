"""Kafka delivery from the receive log, in its own thread: the feed reader never waits.

The loop reads durable log records, validates them (``FrameProcessor``, stamped with
the record's receive time, so a resend builds byte-identical records), and produces
each trade and dead letter stamped with its ``log_position`` (``finpipe.contracts``:
log id, seq, item).

*Exactly once after any stop.* A *session* starts by making sure the topics exist,
then reads every partition of both topics from a persisted floor to its end and notes
which ``(seq, item)`` of this log are already there; it persists its progress and
resends, from the first unacknowledged record on, only what is missing. Progress is
``acked_seq`` (every record up to it is in Kafka) and per partition a *floor*: an offset
below which no item of a record after ``acked_seq`` can be. Kafka keeps a partition in
produce order, so a record's items land after every offset reported before it was
produced: the floor is what had been reported when the oldest unacknowledged record was
produced (or, for items a scan found, the lowest of their offsets). A failed delivery report
(broker away longer than ``KAFKA_DELIVERY_TIMEOUT_SECONDS``) ends the session: once
every outstanding report is in, a new session does the same scan, so a record that
timed out but was in fact written is not sent twice. Delivery trouble never goes to the
dead-letter topic.

Memory stays bounded while the broker is away: at most ``MAX_PENDING_ITEMS`` items are
between the log and Kafka's confirmation; the rest waits in the log on disk.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from finpipe.contracts import (
    DeadLetter,
    LogPosition,
    Positioned,
    log_position,
    log_position_prefix,
    parse_log_position,
)
from finpipe.settings import Settings
from producer.counters import Counters
from producer.frames import FrameProcessor, FrameResult, encode_dead_letter
from producer.journal import Journal, JournalCursor, Record
from producer.topics import TopicError, ensure_topics

log = structlog.get_logger("producer.delivery")

PROGRESS_FILE = "progress.json"
MAX_PENDING_ITEMS = 200_000
PERSIST_SECONDS = 1.0
SCAN_TIMEOUT_SECONDS = 60.0
METADATA_TIMEOUT_SECONDS = 5.0
ERROR_LOG_SECONDS = 10.0
STATS_INTERVAL_MS = 5_000
"""How often librdkafka reports its statistics (the brokers it knows, among them)."""
LOST_CLIENT_SECONDS = 15.0
"""A client that knew no broker at all for this long is replaced (see ``_on_stats``)."""
# Refusals no resend can fix: the record is input the topic cannot hold.
PERMANENT_REFUSALS = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_RECORD,
}

Partition = tuple[str, int]


class _PartlySent(Exception):
    def __init__(self, sent: int) -> None:
        super().__init__(sent)
        self.sent = sent


def producer_config(settings: Settings) -> dict[str, Any]:
    """Durable and fast: idempotent, acks=all, lz4, large batches with a short linger."""
    return {
        "bootstrap.servers": settings.kafka_server,
        "client.id": "finpipe-producer",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 25,
        "batch.size": 1_000_000,
        "batch.num.messages": 50_000,
        "queue.buffering.max.messages": MAX_PENDING_ITEMS + 50_000,
        "queue.buffering.max.kbytes": 524_288,
        "delivery.timeout.ms": int(settings.kafka_delivery_timeout_seconds * 1000),
    }


class PendingRecord:
    """One log record between produce and Kafka's last report for it (the report callback)."""

    __slots__ = (
        "delivery",
        "failed",
        "floors",
        "items",
        "letters",
        "recv_ts_ms",
        "remaining",
        "seq",
    )

    def __init__(self, delivery: Delivery, seq: int, recv_ts_ms: int) -> None:
        self.delivery = delivery
        self.seq = seq
        self.recv_ts_ms = recv_ts_ms
        self.items = 0
        self.letters = 0
        self.remaining = 0
        self.failed = False
        self.floors = delivery.reported_snapshot()
        """Per partition, the end of what Kafka had reported when this record was produced."""

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        """The delivery report of one of this record's trades."""
        self.remaining -= 1
        if err is None:
            self.delivery.reported_trade_ends[msg.partition()] = msg.offset() + 1  # type: ignore[operator]
            return
        self.delivery.report_failed(self, err, msg)

    def letter_report(self, err: KafkaError | None, msg: Message) -> None:
        self.remaining -= 1
        if err is None:
            self.delivery.reported_ends[(msg.topic(), msg.partition())] = msg.offset() + 1  # type: ignore[index, operator]
            return
        self.delivery.report_failed(self, err, msg)


_POSITION_DECODER = msgspec.json.Decoder(Positioned)
BROKERS_DOWN = "all brokers down: receiving into the log, delivering when they are back"


def position_of(value: bytes | None) -> LogPosition | None:
    """The ``log_position`` of a record's value; None for a value without one (or one
    that is not a record of ours: the topic may hold anything)."""
    if not value:
        return None
    try:
        found = _POSITION_DECODER.decode(value).log_position
        return None if found is None else parse_log_position(found)
    except (msgspec.DecodeError, ValueError):
        return None


class Delivery:
    """Start with :meth:`start`; :meth:`stop` delivers what it can within a grace period."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        frames: FrameProcessor,
        counters: Counters,
        extra_config: dict[str, Any] | None = None,
        on_error_frame: Callable[[FrameResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_error_frame = on_error_frame or (lambda result: None)
        self.journal = journal
        self.frames = frames
        self.counters = counters
        self.topic = settings.kafka_topic
        self.dlq_topic = settings.kafka_dlq_topic
        self._progress_path = journal.directory / PROGRESS_FILE
        config = producer_config(settings) | (extra_config or {})
        config["error_cb"] = self._on_error
        config["stats_cb"] = lambda stats_json: self._on_stats(stats_json)  # looked up per call
        config.setdefault("statistics.interval.ms", STATS_INTERVAL_MS)
        self._config = config
        self._producer = Producer(config)
        self._no_broker_since: float | None = None
        self._consumer_config = {
            "bootstrap.servers": settings.kafka_server,
            "group.id": f"finpipe-producer-resend-{journal.log_id}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
        progress = self._load_progress()
        self.acked_seq: int = progress["acked_seq"]
        self.floors: dict[Partition, int] = progress["floors"]
        self.counted_upto = self.acked_seq
        self.reported_ends: dict[Partition, int] = {}
        """Per partition, one past the highest offset delivered (trades: see below)."""
        self.reported_trade_ends: dict[int, int] = {}
        """The trades topic's part of ``reported_ends``, by partition (the hot path)."""
        self._found: list[tuple[Partition, int, int]] = []
        """(partition, offset, seq) of items of unacknowledged records a scan found."""
        self.pending: collections.deque[PendingRecord] = collections.deque()
        self.pending_items = 0
        self._present: dict[int, set[int]] = {}
        self._unsent: list[Record] = []
        self._cursor: JournalCursor | None = None
        self._broken = False
        self._next_error_log = 0.0
        self.kafka_state = "not connected yet"
        self.oldest_undelivered_ts_ms: int | None = None
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.on_acknowledged: Callable[[int, int], None] | None = None
        """Called with (receive time, now) in ms per log record Kafka fully confirmed
        (``producer.metrics`` observes receive -> acknowledgement with it)."""

    # --- progress on disk ---------------------------------------------------------------

    def _load_progress(self) -> dict[str, Any]:
        try:
            data = json.loads(self._progress_path.read_text())
        except FileNotFoundError:
            return {"acked_seq": -1, "floors": {}}
        if data.get("log_id") != self.journal.log_id:
            raise ValueError(
                f"{self._progress_path} belongs to another log ({data.get('log_id')}); "
                "PRODUCER_LOG_DIR holds a mix of two logs"
            )
        floors = {
            (topic, int(p)): int(offset)
            for topic, parts in data["floors"].items()
            for p, offset in parts.items()
        }
        return {"acked_seq": int(data["acked_seq"]), "floors": floors}

    def persist(self) -> None:
        """Write acked_seq and the floors (fsynced) before segments can go or sends start."""
        self._settle_floors()
        by_topic: dict[str, dict[str, int]] = {}
        for (topic, partition), offset in sorted(self.floors.items()):
            by_topic.setdefault(topic, {})[str(partition)] = offset
        payload = {"log_id": self.journal.log_id, "acked_seq": self.acked_seq, "floors": by_topic}
        tmp = self._progress_path.with_name(f".{PROGRESS_FILE}.tmp")
        with tmp.open("w") as handle:
            json.dump(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._progress_path)

    def _merge_trade_ends(self) -> None:
        for partition, end in self.reported_trade_ends.items():
            self.reported_ends[(self.topic, partition)] = end

    def reported_snapshot(self) -> dict[Partition, int]:
        self._merge_trade_ends()
        return dict(self.reported_ends)

    def _settle_floors(self) -> None:
        """Each partition's floor: below every item of a record after ``acked_seq``."""
        self._merge_trade_ends()
        oldest = self.pending[0].floors if self.pending else self.reported_ends
        acked = self.acked_seq
        self._found = [f for f in self._found if f[2] > acked]
        lowest_found: dict[Partition, int] = {}
        for key, offset, _ in self._found:
            lowest_found[key] = min(offset, lowest_found.get(key, offset))
        for key in self.floors:
            candidates = [oldest.get(key, self.floors[key]), lowest_found.get(key)]
            self.floors[key] = min(c for c in candidates if c is not None)

    # --- the thread -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kafka-delivery", daemon=True)
        self._thread.start()

    def stop(self, grace_seconds: float) -> None:
        """Deliver what is durable for up to ``grace_seconds``, then persist and end."""
        self._deadline = time.monotonic() + grace_seconds
        self._stop.set()
        if self._thread is not None:
            self._thread.join(grace_seconds + 5)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surfaced by the producer's heartbeat and exit code
            self.error = exc
            log.exception("the Kafka delivery loop failed")
        finally:
            remaining = self._producer.flush(max(0.0, min(2.0, self._deadline - time.monotonic())))
            self._advance()
            try:
                self.persist()
            except OSError as exc:  # the previous progress file stays valid
                log.error("could not persist delivery progress", error=str(exc))
            log.info("delivery stopped", acked_seq=self.acked_seq, unconfirmed=remaining)

    def _loop(self) -> None:
        next_persist = 0.0
        retry_delay = 0.5
        while True:
            now = time.monotonic()
            if self._stop.is_set() and (now >= self._deadline or self.caught_up()):
                return
            if self._cursor is None:
                if self._stop.is_set():  # no new session on the way out: the log keeps it
                    return
                if not self._start_session():
                    self._wait(retry_delay)
                    retry_delay = min(retry_delay * 2, 10.0)
                    continue
                retry_delay = 0.5
            self._producer.poll(0)
            self._advance()
            if self._broken:
                self._end_session_when_drained()
            elif not self._send_some():
                self._wait_for_work()
            if now >= next_persist:
                next_persist = now + PERSIST_SECONDS
                self._update_oldest()
                if self._client_lost_every_broker(now):
                    self._replace_client()
                if self.kafka_state == "connected":
                    self.persist()
                    self.journal.release(self.acked_seq)

    def _wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < end:
            self._producer.poll(0.1)
            self._update_oldest()
        if self._stop.is_set():
            self._deadline = min(self._deadline, time.monotonic())

    def _wait_for_work(self) -> None:
        if self.pending:
            self._producer.poll(0.02)
        else:
            self.journal.wait_durable(self.journal.durable[2], 0.05)

    def caught_up(self) -> bool:
        return not self.pending and self.acked_seq >= self.journal.durable[2]

    # --- sessions -------------------------------------------------------------------------

    def _start_session(self) -> bool:
        """Topics, the scan of what Kafka already holds, progress on disk; False to retry."""
        try:
            ensure_topics(self.settings, [self.topic, self.dlq_topic], METADATA_TIMEOUT_SECONDS)
            present, found = self._scan()
        except (KafkaException, TopicError, RuntimeError) as exc:
            message = exc.args[0] if exc.args else exc
            self.kafka_state = f"unreachable: {message}"
            self._note(f"Kafka at KAFKA_SERVER={self.settings.kafka_server} not usable: {message}")
            return False
        self._present = present
        self._found = [((topic, partition), offset, seq) for topic, partition, offset, seq in found]
        # Nothing of this session is reported yet: what is produced now lands past the floors.
        self.reported_ends = dict(self.floors)
        self.reported_trade_ends = {p: o for (t, p), o in self.floors.items() if t == self.topic}
        self.pending.clear()
        self.pending_items = 0
        self._unsent = []
        self.persist()
        if self._cursor is not None:
            self._cursor.close()
        self._cursor = JournalCursor(self.journal, self.acked_seq)
        self._broken = False
        self.kafka_state = "connected"
        with self.counters.lock:
            self.counters.delivery_sessions += 1
        log.info(
            "delivering from the receive log",
            after_seq=self.acked_seq,
            log_last_seq=self.journal.last_seq,
            already_in_kafka=sum(len(v) for v in present.values()),
        )
        return True

    def _scan(self) -> tuple[dict[int, set[int]], list[tuple[str, int, int, int]]]:
        """(seq -> items already in Kafka, [(topic, partition, offset, seq)]) past the floors."""
        consumer = Consumer(self._consumer_config)
        try:
            assignment, ends = [], {}
            for topic in (self.topic, self.dlq_topic):
                meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_SECONDS).topics[topic]
                if meta.error is not None:
                    raise KafkaException(meta.error)
                for partition in meta.partitions:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_SECONDS
                    )
                    start = max(low, self.floors.get((topic, partition), high))
                    self.floors[(topic, partition)] = start
                    if start < high:
                        assignment.append(TopicPartition(topic, partition, start))
                        ends[(topic, partition)] = high
            return self._read_to_ends(consumer, assignment, ends)
        finally:
            consumer.close()

    def _read_to_ends(
        self, consumer: Consumer, assignment: list[TopicPartition], ends: dict[Partition, int]
    ) -> tuple[dict[int, set[int]], list[tuple[str, int, int, int]]]:
        present: dict[int, set[int]] = collections.defaultdict(set)
        found: list[tuple[str, int, int, int]] = []
        if not assignment:
            return present, found
        consumer.assign(assignment)
        waiting = set(ends)
        deadline = time.monotonic() + SCAN_TIMEOUT_SECONDS
        while waiting:
            if self._stop.is_set() or time.monotonic() > deadline:
                raise RuntimeError(f"could not read {sorted(waiting)} to their end in time")
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                key = (msg.topic(), msg.partition())
                position = position_of(msg.value())
                if position is not None and position.log_id == self.journal.log_id:
                    seq = position.seq
                    if seq > self.acked_seq:
                        present[seq].add(position.item)
                        found.append((key[0], key[1], msg.offset(), seq))  # type: ignore[arg-type]
                if msg.offset() + 1 >= ends[key]:  # type: ignore[operator]
                    waiting.discard(key)
        return present, found

    def report_failed(self, record: PendingRecord, err: KafkaError, msg: Message) -> None:
        """A delivery report with an error (inside poll): resend later, or dead-letter a
        record the broker refuses for good."""
        permanent = msg.topic() == self.topic and err.code() in PERMANENT_REFUSALS
        if permanent and self._refused_to_dlq(record, err, msg):
            return
        # The record stays pending (so the floors stay below it, in case it was written
        # after all) until the next session's scan tells what Kafka holds.
        record.failed = True
        self._broken = True
        self.counters.delivery_errors += 1
        self.counters.kafka_errors += 1
        self.counters.last_error = f"delivery to {msg.topic()} failed: {err.str()} (will resend)"
        if self.counters.delivery_errors % 1000 == 1:
            log.warning("delivery failed; resending from the log", error=err.str())

    def _refused_to_dlq(self, record: PendingRecord, err: KafkaError, msg: Message) -> bool:
        # The letter keeps the refused record's position: a rescan finds it in the DLQ.
        found = position_of(msg.value())
        position = None if found is None else log_position(*found)
        letter = DeadLetter(
            raw=(msg.value() or b"").decode("utf-8", "replace"),
            reason=f"kafka refused the record: {err.str()}",
            received_ts_ms=record.recv_ts_ms,
            source=self.frames.source,
            log_position=position,
        )
        try:
            self._producer.produce(
                self.dlq_topic,
                encode_dead_letter(letter),
                msg.key(),
                on_delivery=record.letter_report,
            )
        except BufferError:
            return False
        record.remaining += 1
        record.letters += 1
        self.counters.refused_to_dlq += 1
        self.counters.dead_letters_produced += 1
        return True

    def _end_session_when_drained(self) -> None:
        """After a failure: once no report is outstanding, the next session rescans."""
        if any(r.remaining for r in self.pending):
            self._producer.poll(0.1)
            return
        log.warning(
            "a delivery failed: rescanning Kafka before resending",
            acked_seq=self.acked_seq,
            pending_records=len(self.pending),
        )
        self._update_oldest()
        if self._cursor is not None:
            self._cursor.close()
        self._cursor = None
        self.kafka_state = "resending after a failed delivery"

    # --- sending --------------------------------------------------------------------------

    def _send_some(self) -> bool:
        """Produce the next durable records while the window has room; False: nothing to do."""
        if self.pending_items >= MAX_PENDING_ITEMS:
            self._producer.poll(0.02)
            return True
        if not self._unsent:
            assert self._cursor is not None
            self._unsent = self._cursor.read()
            if not self._unsent:
                return False
        records, self._unsent = self._unsent, []
        for index, record in enumerate(records):
            if self.pending_items >= MAX_PENDING_ITEMS or self._broken:
                self._unsent = records[index:]
                break
            if not self._send_record(record):
                self._unsent = records[index:]
                break
        return True

    def _send_record(self, record: Record) -> bool:
        prefix = log_position_prefix(self.journal.log_id, record.seq)
        result = self.frames.process(record.payload, record.recv_ts_ms, prefix)
        pending = PendingRecord(self, record.seq, record.recv_ts_ms)
        items = result.accounted_items
        skip = self._present.pop(record.seq, None)
        sent = letters_sent = 0
        try:
            if skip is None:
                sent = self._produce_trades(result.records, pending)
            else:
                sent = self._produce_trades(
                    [kv for item, kv in enumerate(result.records) if item not in skip], pending
                )
            first_letter = len(result.records)
            for index, letter in enumerate(result.dead_letters):
                if skip is None or first_letter + index not in skip:
                    value = encode_dead_letter(letter, prefix + str(first_letter + index))
                    self._producer.produce(
                        self.dlq_topic, value, None, on_delivery=pending.letter_report
                    )
                    letters_sent += 1
        except _PartlySent as partly:
            # librdkafka's queue is full: the produced part stays; the rest goes by resend.
            sent = partly.sent
            pending.failed = True
            self._broken = True
        except BufferError:
            pending.failed = True
            self._broken = True
        # Reports are served only by poll(), never inside produce(): counting after is safe.
        pending.remaining += sent + letters_sent
        pending.items = items
        pending.letters = len(result.dead_letters)
        self.pending.append(pending)
        self.pending_items += items
        skipped = 0 if skip is None else sum(1 for item in skip if item < items)
        self._account(record.seq, result, sent, letters_sent, skipped)
        return True

    def _produce_trades(self, records: list[tuple[bytes, bytes]], pending: PendingRecord) -> int:
        """Produce (key, value) pairs to the trades topic in one call; how many went.

        ``produce_batch`` partitions each message by its key like ``produce`` does, and
        costs less per message than one ``produce`` call each. A message that found
        librdkafka's queue full is not queued (and gets no report): ``_PartlySent``."""
        if not records:
            return 0
        messages = [{"value": value, "key": key} for key, value in records]
        sent: int = self._producer.produce_batch(self.topic, messages, on_delivery=pending)
        if sent < len(messages):
            for message in messages:
                error = message.get("_error")
                if error is not None and error.code() != KafkaError._QUEUE_FULL:
                    raise KafkaException(error)  # as produce() would: not a full queue
            raise _PartlySent(sent)
        return sent

    def _account(
        self, seq: int, result: FrameResult, sent: int, letters_sent: int, skipped: int
    ) -> None:
        c = self.counters
        with c.lock:
            c.produced += sent
            c.dead_letters_produced += letters_sent
            c.resent_skipped += skipped
            if seq <= self.counted_upto:
                return
            self.counted_upto = seq
            items = result.accounted_items
            c.received += items
            c.in_flight += items
            kind = result.kind
            if kind == "trade":
                c.trade_frames += 1
                c.trades_received += result.trades
                last = result.last_trade_ts_ms
                if last is not None and (c.last_trade_ts_ms is None or last > c.last_trade_ts_ms):
                    c.last_trade_ts_ms = last
            elif kind == "ping":
                c.pings += 1
            elif kind == "error":
                c.error_frames += 1
                self.on_error_frame(result)
            else:
                c.malformed_frames += 1

    def _advance(self) -> None:
        """Move fully confirmed records off the front of the window, in log order."""
        pending = self.pending
        if not pending or pending[0].remaining or pending[0].failed:
            return
        c = self.counters
        now_ms = time.time_ns() // 1_000_000
        acknowledged = self.on_acknowledged
        with c.lock:
            while pending and not pending[0].remaining and not pending[0].failed:
                record = pending.popleft()
                self.acked_seq = record.seq
                self.pending_items -= record.items
                c.delivered += record.items - record.letters
                c.dead_lettered += record.letters
                c.in_flight -= record.items
                if acknowledged is not None:
                    acknowledged(record.recv_ts_ms, now_ms)
            c.last_delivery_ts_ms = now_ms
        # The heartbeat's age of the oldest undelivered record follows the window's front
        # at once (the periodic refresh alone left it up to PERSIST_SECONDS stale).
        if pending:
            self.oldest_undelivered_ts_ms = pending[0].recv_ts_ms
        elif self._unsent:
            self.oldest_undelivered_ts_ms = self._unsent[0].recv_ts_ms
        elif self.acked_seq >= self.journal.last_seq:
            self.oldest_undelivered_ts_ms = None
        if self.kafka_state == BROKERS_DOWN:  # deliveries again: the brokers are back
            self.kafka_state = "connected"

    def _update_oldest(self) -> None:
        if self.pending:
            self.oldest_undelivered_ts_ms = self.pending[0].recv_ts_ms
        elif self._unsent:
            self.oldest_undelivered_ts_ms = self._unsent[0].recv_ts_ms
        elif self.acked_seq >= self.journal.last_seq:
            self.oldest_undelivered_ts_ms = None
        else:
            peek = JournalCursor(self.journal, self.acked_seq)
            first = peek.read(64 * 1024)
            peek.close()
            self.oldest_undelivered_ts_ms = first[0].recv_ts_ms if first else None

    def status(self, now_ms: int | None = None) -> dict[str, Any]:
        """The delivery part of the producer heartbeat."""
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        backlog = max(0, self.journal.last_seq - self.acked_seq)
        oldest = self.oldest_undelivered_ts_ms if backlog else None
        return {
            "backlog_records": backlog,
            "oldest_undelivered_age_s": (
                None if oldest is None else round(max(0, now_ms - oldest) / 1000, 3)
            ),
            "acked_seq": self.acked_seq,
            "kafka_state": self.kafka_state,
        }

    # --- helpers --------------------------------------------------------------------------

    def _note(self, message: str) -> None:
        with self.counters.lock:
            self.counters.kafka_errors += 1
            self.counters.last_error = message
        log.warning(message)

    def _on_error(self, err: KafkaError) -> None:
        self.counters.kafka_errors += 1
        self.counters.last_error = f"kafka: {err.str()}"
        if err.code() == KafkaError._ALL_BROKERS_DOWN and self.kafka_state == "connected":
            # The heartbeat (and the backlog alert) say so at once, not only when the
            # delivery timeout ends the session.
            self.kafka_state = BROKERS_DOWN
        # librdkafka reports every failed reconnect: one line per interval is enough.
        now = time.monotonic()
        if now >= self._next_error_log or err.fatal():
            self._next_error_log = now + ERROR_LOG_SECONDS
            log.warning(
                "kafka client error",
                error=err.str(),
                fatal=err.fatal(),
                errors_so_far=self.counters.kafka_errors,
            )

    def _on_stats(self, stats_json: str) -> None:
        """librdkafka's statistics (inside poll): note when it knows no broker at all.

        A lone broker shutting down answers Metadata for a few milliseconds with its
        topics but an empty broker list (measured with Kafka 4.4). librdkafka (2.10 on)
        then decommissions every broker missing from the answer, the bootstrap servers
        included; when that answer is served after the all-brokers-down re-bootstrap, the
        client has nobody left to connect to and never asks again: no error, no delivery,
        even once the broker is back. Brokers that are merely down stay in this list."""
        try:
            brokers = json.loads(stats_json).get("brokers", {})
        except ValueError:
            return
        known = sum(1 for b in brokers.values() if b.get("source") in ("learned", "configured"))
        if known:
            self._no_broker_since = None
        elif self._no_broker_since is None:
            self._no_broker_since = time.monotonic()

    def _client_lost_every_broker(self, now: float) -> bool:
        since = self._no_broker_since
        return since is not None and now - since >= LOST_CLIENT_SECONDS

    def _replace_client(self) -> None:
        """Replace a client that knows no broker with a new one (from bootstrap.servers).

        Knowing no broker, the old client holds no connection, so nothing it holds can
        still reach Kafka: its messages are purged, their records fail, and the session
        ends as after any failed delivery (a scan of Kafka, then a resend from the log)."""
        old = self._producer
        log.warning(
            "the Kafka client knows no broker any more: replacing it, then resending "
            "from the receive log after a scan of Kafka",
            known_for_s=LOST_CLIENT_SECONDS,
            pending_records=len(self.pending),
        )
        with self.counters.lock:
            self.counters.kafka_client_replacements += 1
        old.purge(in_queue=True, in_flight=True, blocking=False)
        deadline = time.monotonic() + 5.0
        while any(r.remaining for r in self.pending) and time.monotonic() < deadline:
            old.poll(0.1)  # serves the purged messages' reports: their records fail
        for record in self.pending:  # a report the purge did not serve: failed all the same
            if record.remaining:
                record.remaining = 0
                record.failed = True
        self._producer = Producer(self._config)
        self._no_broker_since = None
        self._broken = True
        old.flush(0)

    def __len__(self) -> int:
        return len(self._producer)
