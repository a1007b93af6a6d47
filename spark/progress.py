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

RECEIVE_OBSERVATION = "finpipe_receive"
"""The query's observed metrics (``Dataset.observe``, see ``spark.metrics``): computed
while a batch runs, reported in its progress."""
OLDEST_RECEIVE_KEY = "oldest_ingest_ts_ms"


@dataclass(frozen=True)
class BatchProgress:
    batch_id: int
    input_rows: int
    batch_duration_ms: int
    end_offsets: dict[str, dict[str, int]]
    latest_offsets: dict[str, dict[str, int]]
    oldest_receive_ms: int | None = None
    """The producer's receive time of the batch's oldest row (None: not observed)."""

    @property
    def partition_lag(self) -> dict[str, dict[str, int]]:
        """Per topic and partition, records in Kafka past this batch when it was planned."""
        return {
            topic: {
                p: max(0, latest - self.end_offsets.get(topic, {}).get(p, 0))
                for p, latest in partitions.items()
            }
            for topic, partitions in self.latest_offsets.items()
        }

    @property
    def lag_records(self) -> int:
        """Records in Kafka not yet in a committed batch, when the batch was planned."""
        return sum(sum(parts.values()) for parts in self.partition_lag.values())


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


def _observed_oldest_receive(progress: Any) -> int | None:
    observed = (getattr(progress, "observedMetrics", None) or {}).get(RECEIVE_OBSERVATION)
    value = observed.asDict().get(OLDEST_RECEIVE_KEY) if observed is not None else None
    return None if value is None else int(value)


def batch_progress(progress: Any) -> BatchProgress:
    """From pyspark's ``StreamingQueryProgress`` (single Kafka source)."""
    source = progress.sources[0] if progress.sources else None
    return BatchProgress(
        batch_id=int(progress.batchId),
        input_rows=int(progress.numInputRows),
        batch_duration_ms=int(progress.durationMs.get("triggerExecution", 0)),
        end_offsets=_offsets(source.endOffset if source else None),
        latest_offsets=_offsets(source.latestOffset if source else None),
        oldest_receive_ms=_observed_oldest_receive(progress),
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
    total_input_rows: int = 0
    last: dict[str, Any] | None = None

    def record(self, progress: BatchProgress, written: BatchWrite) -> dict[str, Any]:
        """The heartbeat (and log) fields of a committed batch."""
        self.batches += 1
        self.total_rows += written.rows
        self.total_rejects += written.rejects
        self.total_input_rows += progress.input_rows
        self.last = {
            "batch_id": progress.batch_id,
            # Spark reports a batch's progress once its commit is written (see above).
            "committed_ts_ms": int(time.time() * 1000),
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
            "total_input_rows": self.total_input_rows,
        }
