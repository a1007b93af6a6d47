"""The producer's durable receive log: every frame on disk before anything else happens.

The shape of kdb+'s tickerplant log: an append-only file of every update, in order,
that subscribers (here: the Kafka delivery loop) read back and a restart replays.

Layout: ``<log dir>/seg-<first seq, 20 digits>.log`` segment files, each starting with
``SEGMENT_MAGIC`` and holding records of

    u32 payload length | u32 crc32 | u64 sequence | u64 receive time (ms) | payload

(little endian; the CRC covers the three fields after it and the payload). Sequence
numbers grow by one per record across segments, for the life of the log directory.

Durability: ``append`` writes each frame to the current segment at once (so a killed
process loses nothing it appended: the bytes are in the page cache), and a flusher
thread fsyncs every flush window. Readers only see records up to the last fsync (the
*durable* end), so Kafka never holds a record the log could lose in a power cut, and a
sequence number is never handed out twice.

A crash can leave a torn record at the end of the newest segment; opening the log
truncates it (and reports how many bytes went).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

log = structlog.get_logger("producer.journal")

SEGMENT_MAGIC = b"FPJRNL1\n"
HEADER = struct.Struct("<IIQQ")
_CRC_PART = struct.Struct("<QQ")
IDENTITY_FILE = "log-id"
LOCK_FILE = "lock"
LOCK_WAIT_SECONDS = 20.0
SEGMENT_PREFIX, SEGMENT_SUFFIX = "seg-", ".log"
MAX_RECORD_BYTES = 64 * 1024 * 1024
"""A length field above this is a torn or corrupt header, not a frame."""
NEAR_CAPACITY_FRACTION = 0.8
READ_CHUNK = 1 << 20


class JournalError(OSError):
    """The log cannot take a frame; the message names the setting to change."""


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    recv_ts_ms: int
    payload: bytes


@dataclass(slots=True)
class Segment:
    first_seq: int
    path: Path
    size: int
    last_seq: int  # first_seq - 1 while empty
    mtime: float


def segment_name(first_seq: int) -> str:
    return f"{SEGMENT_PREFIX}{first_seq:020d}{SEGMENT_SUFFIX}"


def encode_record(seq: int, recv_ts_ms: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(_CRC_PART.pack(seq, recv_ts_ms)))
    return HEADER.pack(len(payload), crc, seq, recv_ts_ms) + payload


def decode_records(buffer: bytes | memoryview, start: int = 0) -> tuple[list[Record], int, bool]:
    """Whole valid records from ``buffer[start:]``: (records, end offset, stopped at a bad one).

    A record cut off by the end of the buffer is not bad (the next read completes it);
    a length beyond ``MAX_RECORD_BYTES`` or a CRC mismatch is.
    """
    records: list[Record] = []
    view = memoryview(buffer)
    pos, end, size = start, len(view), HEADER.size
    unpack, crc32, crc_part = HEADER.unpack_from, zlib.crc32, _CRC_PART.pack
    while pos + size <= end:
        length, crc, seq, ts = unpack(view, pos)
        if length > MAX_RECORD_BYTES:
            return records, pos, True
        stop = pos + size + length
        if stop > end:
            break
        payload = bytes(view[pos + size : stop])
        if crc32(payload, crc32(crc_part(seq, ts))) != crc:
            return records, pos, True
        records.append(Record(seq, ts, payload))
        pos = stop
    return records, pos, False


def scan_segment(path: Path) -> tuple[int, int | None, int]:
    """(end of the valid records, last valid seq or None, bytes after them) of a segment."""
    with path.open("rb") as handle:
        if handle.read(len(SEGMENT_MAGIC)) != SEGMENT_MAGIC:
            return 0, None, path.stat().st_size
        pos, last, carry = len(SEGMENT_MAGIC), None, b""
        while chunk := handle.read(READ_CHUNK):
            buffer = carry + chunk
            records, used, bad = decode_records(buffer)
            if records:
                last = records[-1].seq
            pos += used
            carry = buffer[used:]
            if bad:
                break
        return pos, last, path.stat().st_size - pos


def list_segments(directory: Path) -> list[Segment]:
    found = []
    for path in directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"):
        digits = path.name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)]
        if digits.isdigit():
            stat = path.stat()
            first = int(digits)
            found.append(Segment(first, path, stat.st_size, first - 1, stat.st_mtime))
    found.sort(key=lambda s: s.first_seq)
    for older, newer in itertools.pairwise(found):
        older.last_seq = newer.first_seq - 1
    return found


def read_segment_records(path: Path) -> Iterator[Record]:
    """Every valid record of one segment file, in order (replay, export, tests)."""
    with path.open("rb") as handle:
        if handle.read(len(SEGMENT_MAGIC)) != SEGMENT_MAGIC:
            raise ValueError(f"{path} is not a finpipe producer log segment")
        carry = b""
        while chunk := handle.read(READ_CHUNK):
            buffer = carry + chunk
            records, used, bad = decode_records(buffer)
            yield from records
            carry = buffer[used:]
            if bad:
                return


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Append (one writer thread), flush in groups (own thread), read durable records.

    ``max_bytes`` bounds the directory; acknowledged segments older than ``retention_s``
    are deleted by :meth:`release`, and under capacity pressure acknowledged segments go
    early (Kafka holds them). When only unacknowledged data is left, :meth:`append`
    raises :class:`JournalError` and the caller stops reading.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        flush_window_s: float,
        retention_s: float,
        capacity_setting: str = "PRODUCER_LOG_MAX_MB",
        dir_setting: str = "PRODUCER_LOG_DIR",
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.flush_window_s = flush_window_s
        self.retention_s = retention_s
        self._capacity_setting = capacity_setting
        self._dir_setting = dir_setting
        self._lock = threading.Lock()
        self._durable_changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self.acked_seq = -1
        """Highest sequence whose records are all in Kafka (set by the delivery loop)."""
        self.truncated_bytes = 0
        self.flush_errors = 0
        self.last_error: str | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = self._take_lock()
            self.log_id = self._identity()
            self.segments = list_segments(directory)
            self._recover_tail()
            if not self.segments or self.segments[-1].size >= segment_bytes:
                self._new_segment(self.next_seq)
            self._fd = os.open(self.segments[-1].path, os.O_WRONLY | os.O_APPEND)
        except JournalError:
            raise
        except OSError as exc:
            raise JournalError(
                f"the producer log directory {directory} is not usable ({exc.strerror or exc}); "
                f"fix its permissions or free space, or point {dir_setting} elsewhere"
            ) from None
        current = self.segments[-1]
        self._written = (current.first_seq, current.size, self.next_seq - 1)
        self._durable = self._written
        # Two counters, each changed by one side only, so appends need no lock.
        self._appended_bytes = sum(s.size for s in self.segments)
        self._deleted_bytes = 0

    @property
    def bytes(self) -> int:
        return self._appended_bytes - self._deleted_bytes

    # --- opening ----------------------------------------------------------------------

    def _take_lock(self) -> int:
        """One producer per log directory; a stopping predecessor gets time to finish."""
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise JournalError(
                        f"another producer is using the log in {self.directory}; stop it, or "
                        f"give this one its own {self._dir_setting}"
                    ) from None
                time.sleep(0.2)

    def _identity(self) -> str:
        path = self.directory / IDENTITY_FILE
        with contextlib.suppress(FileNotFoundError):
            return path.read_text().strip()
        value = uuid.uuid4().hex
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value + "\n")
        os.replace(tmp, path)
        _fsync_dir(self.directory)
        return value

    def _recover_tail(self) -> None:
        """Truncate a torn or corrupt tail of the newest segment (a crash mid-write)."""
        self.next_seq = 0
        if not self.segments:
            return
        tail = self.segments[-1]
        end, last, garbage = scan_segment(tail.path)
        if end == 0:  # not even the magic made it to disk
            with tail.path.open("wb") as handle:
                handle.write(SEGMENT_MAGIC)
                os.fsync(handle.fileno())
            end = len(SEGMENT_MAGIC)
        elif garbage:
            os.truncate(tail.path, end)
        if garbage:
            self.truncated_bytes = garbage
            log.warning(
                "producer log: truncated a torn record at the end of the newest segment",
                segment=tail.path.name,
                bytes=garbage,
            )
        tail.size = end
        tail.last_seq = last if last is not None else tail.first_seq - 1
        self.next_seq = tail.last_seq + 1

    def _new_segment(self, first_seq: int) -> None:
        path = self.directory / segment_name(first_seq)
        with path.open("wb") as handle:
            handle.write(SEGMENT_MAGIC)
            os.fsync(handle.fileno())
        _fsync_dir(self.directory)
        self.segments.append(
            Segment(first_seq, path, len(SEGMENT_MAGIC), first_seq - 1, time.time())
        )

    # --- writing ----------------------------------------------------------------------

    def append(self, payload: bytes, recv_ts_ms: int) -> int:
        """Write one frame to the log; returns its sequence number. Raises JournalError."""
        data = encode_record(self.next_seq, recv_ts_ms, payload)
        if len(data) > self.max_bytes // 2:
            raise JournalError(
                f"a received frame of {len(data) / 1e6:.1f} MB is larger than half of "
                f"{self._capacity_setting}={self.max_bytes // 1_000_000}; reading from the feed "
                f"is paused: raise {self._capacity_setting}"
            )
        if self.bytes + len(data) > self.max_bytes and not self._make_room(len(data)):
            raise JournalError(
                f"the producer log is full: {self.bytes / 1e6:.0f} MB of records not yet "
                f"in Kafka reach {self._capacity_setting}={self.max_bytes // 1_000_000}; "
                "reading from the feed is paused until Kafka takes the backlog "
                f"(fix the broker, or raise {self._capacity_setting})"
            )
        current = self.segments[-1]
        if current.size >= self.segment_bytes and current.last_seq >= current.first_seq:
            self._roll()
            current = self.segments[-1]
        try:
            written = os.write(self._fd, data)
        except OSError as exc:
            self._undo_partial_write(current)
            raise JournalError(
                f"cannot write the producer log in {self.directory} ({exc.strerror or exc}); "
                f"free space or fix {self._dir_setting}; reading from the feed is paused"
            ) from None
        if written != len(data):
            self._undo_partial_write(current)
            raise JournalError(
                f"short write to the producer log in {self.directory} (disk full?); "
                f"free space or fix {self._dir_setting}; reading from the feed is paused"
            )
        seq = self.next_seq
        self.next_seq = seq + 1
        current.size += written
        current.last_seq = seq
        current.mtime = time.time()
        self._appended_bytes += written
        self._written = (current.first_seq, current.size, seq)
        return seq

    def _undo_partial_write(self, segment: Segment) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, segment.size)

    def _roll(self) -> None:
        """Close the full segment (fsynced: only the newest segment can have a torn tail)."""
        with self._lock:
            os.fsync(self._fd)
            os.close(self._fd)
            old = self.segments[-1]
            self._durable = (old.first_seq, old.size, old.last_seq)
            self._new_segment(self.next_seq)
            self._appended_bytes += len(SEGMENT_MAGIC)
            self._fd = os.open(self.segments[-1].path, os.O_WRONLY | os.O_APPEND)
            self._written = (self.next_seq, len(SEGMENT_MAGIC), self.next_seq - 1)
            self._durable_changed.notify_all()

    def flush(self) -> None:
        """fsync what was appended and publish it as durable (flusher thread, shutdown)."""
        with self._lock:
            written = self._written
            if written == self._durable:
                return
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self.flush_errors += 1
                self.last_error = f"fsync of the producer log failed: {exc}"
                log.error(self.last_error, directory=str(self.directory))
                return
            self._durable = written
            self._durable_changed.notify_all()

    def start_flusher(self) -> None:
        self._flusher = threading.Thread(target=self._flush_loop, name="log-flusher", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_window_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(5)
        self.flush()
        with self._lock, contextlib.suppress(OSError):
            os.close(self._fd)
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)  # releases the lock

    # --- reading ----------------------------------------------------------------------

    @property
    def durable(self) -> tuple[int, int, int]:
        """(first seq of the segment, byte offset, last seq) up to which records are on disk."""
        return self._durable

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    def wait_durable(self, beyond_seq: int, timeout: float) -> bool:
        with self._durable_changed:
            if self._durable[2] > beyond_seq:
                return True
            self._durable_changed.wait(timeout)
            return self._durable[2] > beyond_seq

    def segment_after(self, first_seq: int) -> Segment | None:
        with self._lock:
            later = [s for s in self.segments if s.first_seq > first_seq]
        return later[0] if later else None

    def segment_holding(self, seq: int) -> Segment:
        """The segment a record with ``seq`` is (or will be) in."""
        with self._lock:
            holding = [s for s in self.segments if s.first_seq <= seq]
            return holding[-1] if holding else self.segments[0]

    # --- space ------------------------------------------------------------------------

    def release(self, acked_seq: int, now: float | None = None) -> list[str]:
        """Record Kafka's progress; delete acknowledged segments past retention."""
        self.acked_seq = max(self.acked_seq, acked_seq)
        now = time.time() if now is None else now
        return self._delete(lambda s: now - s.mtime >= self.retention_s)

    def _make_room(self, needed: int) -> bool:
        deleted = self._delete(lambda s: self.bytes + needed > self.max_bytes)
        if deleted:
            log.warning(
                "producer log at capacity: deleted acknowledged segments before their "
                "retention (they are in Kafka)",
                segments=deleted,
                setting=self._capacity_setting,
            )
        return self.bytes + needed <= self.max_bytes

    def _delete(self, wanted: object) -> list[str]:
        deleted: list[str] = []
        with self._lock:
            # Never the newest segment (being written), only fully acknowledged ones, oldest first.
            while len(self.segments) > 1:
                oldest = self.segments[0]
                if oldest.last_seq > self.acked_seq or not wanted(oldest):  # type: ignore[operator]
                    break
                with contextlib.suppress(FileNotFoundError):
                    oldest.path.unlink()
                self.segments.pop(0)
                self._deleted_bytes += oldest.size
                deleted.append(oldest.path.name)
        return deleted

    def unacked_bytes(self) -> int:
        """Bytes of segments holding a record Kafka has not confirmed (not reclaimable)."""
        return sum(s.size for s in list(self.segments) if s.last_seq > self.acked_seq)

    def usage(self) -> dict[str, object]:
        """The log's part of the producer heartbeat."""
        unacked = self.unacked_bytes()
        # Acknowledged segments are deleted as soon as room is needed: only the rest counts.
        fraction = unacked / self.max_bytes if self.max_bytes else 0.0
        return {
            "log_bytes": self.bytes,
            "log_unacked_bytes": unacked,
            "log_capacity_bytes": self.max_bytes,
            "log_segments": len(self.segments),
            "log_last_seq": self.last_seq,
            "log_durable_seq": self._durable[2],
            "log_used_fraction": round(fraction, 6),
            "log_near_capacity": fraction >= NEAR_CAPACITY_FRACTION,
            "log_truncated_bytes_at_open": self.truncated_bytes,
        }


class JournalCursor:
    """Reads durable records in order, from any sequence on (the delivery loop's view)."""

    def __init__(self, journal: Journal, after_seq: int) -> None:
        self.journal = journal
        segment = journal.segment_holding(after_seq + 1)
        self._segment_first = segment.first_seq
        self._path = segment.path
        self._pos = len(SEGMENT_MAGIC)
        self._skip_upto = after_seq
        self.corrupt = 0
        self._handle: BinaryIO | None = None
        self._handle_path: Path | None = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def read(self, max_bytes: int = READ_CHUNK) -> list[Record]:
        """The next durable records (possibly none); moves to the next segment at an end."""
        durable_first, durable_pos, _ = self.journal.durable
        while True:
            if self._segment_first > durable_first:  # nothing of this segment is on disk yet
                return []
            limit = durable_pos if durable_first == self._segment_first else None
            records = self._read_here(limit, max_bytes)
            if records is None:  # this segment is done: a later one exists
                nxt = self.journal.segment_after(self._segment_first)
                if nxt is None or nxt.first_seq > durable_first:
                    return []
                self._segment_first, self._path, self._pos = (
                    nxt.first_seq,
                    nxt.path,
                    len(SEGMENT_MAGIC),
                )
                continue
            records = [r for r in records if r.seq > self._skip_upto]
            if records:
                return records
            if limit is not None and self._pos >= limit:
                return []

    def _read_here(self, limit: int | None, max_bytes: int) -> list[Record] | None:
        if limit is not None and self._pos >= limit:
            return []
        want = max_bytes if limit is None else min(max_bytes, limit - self._pos)
        try:
            if self._handle is None or self._handle_path != self._path:
                self.close()
                self._handle, self._handle_path = self._path.open("rb"), self._path
            buffer = os.pread(self._handle.fileno(), want, self._pos)
        except FileNotFoundError:
            return None
        records, used, bad = decode_records(buffer)
        if not records and not bad and len(buffer) < want:
            return None if limit is None else []
        if not records and not bad and used == 0 and len(buffer) == want:
            # One record larger than the chunk: read it whole.
            length = HEADER.unpack_from(buffer)[0] if len(buffer) >= HEADER.size else 0
            return self._read_here(limit, HEADER.size + length) if length else []
        self._pos += used
        if bad:
            self.corrupt += 1
            log.error(
                "producer log: a corrupt record in a closed segment; skipping the rest of it",
                segment=self._path.name,
                offset=self._pos,
            )
            return None if limit is None else []
        return records
