"""Progress of the streaming query, as the health heartbeat and the batch log report it.

Spark posts a ``QueryProgressEvent`` after a micro-batch's commit log entry is written,
so an event for a batch that the sink wrote is the signal "this batch is committed".
The listener only queues events; the main thread turns them into heartbeats, so the
health reporter (and Dagster Pipes) is only ever used from one thread.
"""

from __future__ import annotations

import json
import queue
import time
from dataclasses import dataclass
from typing import Any

from pyspark.sql.streaming import StreamingQueryListener

from spark.sink import BatchWrite


@dataclass(frozen=True)
class BatchProgress:
    batch_id: int
    input_rows: int
    batch_duration_ms: int
    end_offsets: dict[str, dict[str, int]]
    latest_offsets: dict[str, dict[str, int]]

    @property
    def lag_records(self) -> int:
        """Records in Kafka not yet in a committed batch, when the batch was planned."""
        lag = 0
        for topic, partitions in self.latest_offsets.items():
            ends = self.end_offsets.get(topic, {})
            lag += sum(max(0, latest - ends.get(p, 0)) for p, latest in partitions.items())
        return lag


def _offsets(text: str | None) -> dict[str, dict[str, int]]:
    if not text or text == "null":
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {
        str(topic): {str(p): int(o) for p, o in parts.items()}
        for topic, parts in parsed.items()
        if isinstance(parts, dict)
    }


def batch_progress(progress: Any) -> BatchProgress:
    """From pyspark's ``StreamingQueryProgress`` (single Kafka source)."""
    source = progress.sources[0] if progress.sources else None
    return BatchProgress(
        batch_id=int(progress.batchId),
        input_rows=int(progress.numInputRows),
        batch_duration_ms=int(progress.durationMs.get("triggerExecution", 0)),
        end_offsets=_offsets(source.endOffset if source else None),
        latest_offsets=_offsets(source.latestOffset if source else None),
    )


class ProgressListener(StreamingQueryListener):
    def __init__(self, events: queue.Queue[BatchProgress]) -> None:
        self._events = events
        self.progress_ts: float | None = None
        """When the query last planned a trigger (a batch, or "no new data"): each needs
        the topic's latest offsets from Kafka, so a query that cannot reach the broker
        stops advancing this while its process, and its heartbeat, live on."""

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        self._events.put(batch_progress(event.progress))
        self.progress_ts = time.time()

    def onQueryIdle(self, event: Any) -> None:
        self.progress_ts = time.time()

    def onQueryTerminated(self, event: Any) -> None:
        pass


@dataclass
class StreamTotals:
    """Counters of this process's lifetime, merged into every heartbeat."""

    batches: int = 0
    total_rows: int = 0
    total_rejects: int = 0
    last: dict[str, Any] | None = None

    def record(self, progress: BatchProgress, written: BatchWrite) -> dict[str, Any]:
        """The heartbeat (and log) fields of a committed batch."""
        self.batches += 1
        self.total_rows += written.rows
        self.total_rejects += written.rejects
        self.last = {
            "batch_id": progress.batch_id,
            "rows": written.rows,
            "rejects": written.rejects,
            "input_rows": progress.input_rows,
            "max_trade_ts_ms": written.max_trade_ts_ms,
            "end_offsets": progress.end_offsets,
            "lag_records": progress.lag_records,
            "batch_duration_ms": progress.batch_duration_ms,
            "write_ms": written.write_ms,
            "commit_ms": written.commit_ms,
            "table_version": written.table_version,
            "replayed": written.replayed,
            "files_written": written.files_written,
            "processed_ts_ms": written.processed_ts_ms,
        }
        return self.counters()

    def counters(self) -> dict[str, Any]:
        return {
            **(self.last or {}),
            "batches": self.batches,
            "total_rows": self.total_rows,
            "total_rejects": self.total_rejects,
        }
