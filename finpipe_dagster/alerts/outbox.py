"""The alert outbox: open incidents and their messages in one SQLite file, durable.

Opening or closing an incident and queueing its message happen in one transaction, before
anything is sent, so a tick cut off by Dagster's evaluation timeout or a daemon restart
neither loses a message nor queues it twice (each has an idempotency key: incident, the
time it opened, open/recovery). Messages go out oldest first; one that fails is retried
with a backoff and nothing behind it overtakes it, so a webhook that was down gets every
message once, in order. A message is marked delivered only after a 2xx answer: if the
process dies between the answer and the mark, that one message is sent again (the
``Idempotency-Key`` header lets a receiver drop the repeat).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (
    key TEXT PRIMARY KEY, since REAL NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    delivered REAL);
"""
FIRST_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Message:
    id: int
    idempotency_key: str
    text: str
    attempts: int


def outbox_path(state_dir: Path) -> Path:
    return state_dir / "alerts.sqlite"


class AlertOutbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path, timeout=10)) as db:
            db.executescript(SCHEMA)  # commits by itself

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=10, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def watching_since(self, now: float) -> float:
        """When alerting started here (kept, so a lost cursor or a restart changes nothing)."""
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('watching_since', ?)", (now,))
            (since,) = db.execute("SELECT value FROM meta WHERE name = 'watching_since'").fetchone()
        return float(since)

    def open_incidents(self) -> dict[str, tuple[float, str]]:
        with self._db() as db:
            return {k: (since, text) for k, since, text in db.execute("SELECT * FROM incidents")}

    def reconcile(
        self,
        current: dict[str, str],
        now: float,
        opened: Callable[[str], str],
        recovered: Callable[[str, float], str],
    ) -> list[tuple[str, str]]:
        """Open incidents in ``current`` (key -> text) that are not open, close those that
        are gone; queue their messages. Returns (what changed, the message queued)."""
        changes = []
        with self._db() as db:
            known = {k: (s, t) for k, s, t in db.execute("SELECT * FROM incidents")}
            for key, text in current.items():
                if key in known:
                    continue
                db.execute("INSERT INTO incidents VALUES (?, ?, ?)", (key, now, text))
                message = opened(text)
                self._queue(db, f"{key}@{now:.3f}:open", message, now)
                changes.append((f"opened {key}", message))
            for key, (since, text) in known.items():
                if key in current:
                    continue
                db.execute("DELETE FROM incidents WHERE key = ?", (key,))
                message = recovered(text, now - since)
                self._queue(db, f"{key}@{since:.3f}:recovery", message, now)
                changes.append((f"closed {key}", message))
        return changes

    @staticmethod
    def _queue(db: sqlite3.Connection, key: str, text: str, now: float) -> None:
        db.execute(
            "INSERT OR IGNORE INTO outbox (idempotency_key, text, created, next_attempt)"
            " VALUES (?, ?, ?, ?)",
            (key, text, now, now),
        )

    def pending(self) -> list[Message]:
        with self._db() as db:
            rows = db.execute(
                "SELECT id, idempotency_key, text, attempts FROM outbox"
                " WHERE delivered IS NULL ORDER BY id"
            ).fetchall()
        return [Message(*row) for row in rows]

    def drain(
        self,
        send: Callable[[Message], bool],
        *,
        max_messages: int,
        budget_seconds: float,
        retry_max_seconds: float,
    ) -> list[str]:
        """Send due messages in order until one fails, ``max_messages`` went out, or the
        time budget is spent; returns what happened."""
        started = time.monotonic()
        report = []
        for message in self.pending()[:max_messages]:
            if time.monotonic() - started >= budget_seconds:
                break
            with self._db() as db:
                (due,) = db.execute(
                    "SELECT next_attempt FROM outbox WHERE id = ?", (message.id,)
                ).fetchone()
            if due > time.time():
                report.append(f"{message.idempotency_key}: retry in {due - time.time():.0f}s")
                break
            if send(message):
                with self._db() as db:
                    db.execute(
                        "UPDATE outbox SET delivered = ?, attempts = attempts + 1 WHERE id = ?",
                        (time.time(), message.id),
                    )
                report.append(f"{message.idempotency_key}: delivered")
                continue
            delay = min(FIRST_RETRY_SECONDS * 2 ** min(message.attempts, 16), retry_max_seconds)
            with self._db() as db:
                db.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt = ? WHERE id = ?",
                    (time.time() + delay, message.id),
                )
            report.append(f"{message.idempotency_key}: failed, retry in {delay:.0f}s")
            break
        return report
