"""The streaming query ``stock-ticks`` -> ``processed_trades`` and the loop that runs it.

The loop owns the process's life: it reports a heartbeat per committed batch and every
few seconds while idle, stops the query when asked (SIGTERM/SIGINT set ``stop``), and
returns an exit code. An interrupted batch is simply abandoned: its offsets are already
in the checkpoint, so the next start replays it, and the sink commits it unless the
tables already hold it.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from deltalake.exceptions import DeltaError
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from finpipe import contracts, exit_codes, lake_migration
from finpipe.health import PROGRESS_KEY, SPARK, StreamReporter
from finpipe.lake import rejects_table, trades_table
from finpipe.settings import Settings, SettingsError
from spark.metrics import SparkMetrics, observe_receive_times
from spark.progress import BatchProgress, ProgressListener, StreamTotals
from spark.session import build_spark_session
from spark.sink import LakeBatchSink, committed_batch
from spark.transform import prepare_trades

STREAM_NAME = SPARK
QUERY_NAME = "processed_trades"
IDLE_HEARTBEAT_SECONDS = 5.0
POLL_SECONDS = 0.5
STOP_TIMEOUT = "60s"
# Bounds one batch after a long outage, so catching up never needs more than the
# driver's memory; at the 5 s trigger this is far above any sustained rate.
MAX_OFFSETS_PER_TRIGGER = 2_000_000
SPARK_UI_URL_KEY = "spark_ui_url"
# Kafka's own default for one request; never longer than SPARK_KAFKA_TIMEOUT_SECONDS.
KAFKA_REQUEST_TIMEOUT_MS = 30_000

log = structlog.get_logger("spark")


def start_query(spark: SparkSession, settings: Settings, sink: LakeBatchSink) -> StreamingQuery:
    kafka_timeout_ms = int(settings.spark_kafka_timeout_seconds * 1000)
    kafka = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_server)
        .option("subscribe", settings.kafka_topic)
        # Only used on a first start; afterwards the checkpoint's offsets win.
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", str(MAX_OFFSETS_PER_TRIGGER))
        .option("kafka.default.api.timeout.ms", str(kafka_timeout_ms))
        .option("kafka.request.timeout.ms", str(min(kafka_timeout_ms, KAFKA_REQUEST_TIMEOUT_MS)))
        .load()
    )
    checkpoint = settings.checkpoint_dir.expanduser().resolve()
    checkpoint.mkdir(parents=True, exist_ok=True)
    return (
        observe_receive_times(prepare_trades(kafka, settings.trade_future_tolerance_ms))
        .writeStream.queryName(QUERY_NAME)
        .foreachBatch(sink)
        .option("checkpointLocation", checkpoint.as_uri())
        .trigger(processingTime=f"{settings.spark_trigger_seconds} seconds")
        .start()
    )


class LakeCheckpointMismatch(Exception):
    """The lake holds batches the checkpoint does not know: refuse to start."""


class LakeUnreachable(Exception):
    """The lake's tables could not be opened (or created) at start-up."""


def last_planned_batch(checkpoint_dir: Path) -> int:
    """The highest batch id in the checkpoint's offset log, -1 for a new checkpoint.

    Planned, not committed: a batch the tables committed but Spark did not record as done
    (a crash between the two) is replayed with the same offsets and skipped by the sink,
    so the tables may be one batch ahead of the commit log, never of the offset log.
    """
    offsets = checkpoint_dir.expanduser() / "offsets"
    if not offsets.is_dir():
        return -1
    return max((int(p.name) for p in offsets.iterdir() if p.name.isdigit()), default=-1)


def committed_batches(settings: Settings) -> int:
    """The newest batch the streaming query committed to either table (-1: none), from
    their application transactions; creates the tables when there are none yet."""
    tables = (trades_table(settings), rejects_table(settings))
    return max(committed_batch(table.ensure()) for table in tables)


def check_checkpoint_matches_lake(settings: Settings) -> None:
    """Refuse a checkpoint that is behind the lake: new, lost, or restored from a copy.

    Such a checkpoint numbers its next batches with ids the tables have already
    committed, for other Kafka offsets: the sink would take those batches for replays and
    add nothing (their trades lost), and a new checkpoint would also read the topic from
    its earliest offset again. One read of each table's log, before any Spark session is
    built; the tables are created here when there are none yet.
    """
    planned = last_planned_batch(settings.checkpoint_dir)
    try:
        old_layout = lake_migration.old_layout_problem(settings)
        if old_layout is None:
            committed = committed_batches(settings)
    except (OSError, DeltaError, BotoCoreError, ClientError) as exc:
        raise LakeUnreachable(
            f"cannot open the lake {settings.lake_uri} at {settings.s3_endpoint_url}: "
            f"{one_line(str(exc))} "
            "(is MinIO/S3 up, and are S3_ENDPOINT_URL, S3_BUCKET and the S3 keys right?)"
        ) from exc
    if old_layout is not None:
        raise LakeCheckpointMismatch(old_layout)
    if committed <= planned:
        return
    if planned < 0:
        raise LakeCheckpointMismatch(
            f"the lake {settings.lake_uri} has committed batches up to {committed} of "
            f"{contracts.SPARK_APP_ID}, but the checkpoint {settings.checkpoint_dir} is new: "
            "starting would read the topic again and take its first batches for ones "
            "already committed. Restore the checkpoint the lake was written with "
            "(SPARK_CHECKPOINT_DIR), or start a new table with a new LAKE_PREFIX."
        )
    raise LakeCheckpointMismatch(
        f"the lake {settings.lake_uri} has committed batch {committed} of "
        f"{contracts.SPARK_APP_ID}, but the checkpoint {settings.checkpoint_dir} knows "
        f"batches only up to {planned}: it is older than the lake (restored from an older "
        "copy, or it lost its newest files). Starting would number other Kafka offsets "
        f"{planned + 1}..{committed} and drop them as replays of what the lake holds. "
        "Restore the newest checkpoint the lake was written with (SPARK_CHECKPOINT_DIR), "
        "or start a new table with a new LAKE_PREFIX; see docs/operations.md, 'Spark "
        "refuses a checkpoint that is behind the lake'."
    )


def describe(settings: Settings) -> dict[str, Any]:
    """Where the job reads and writes (no secrets)."""
    return {
        "kafka_server": settings.kafka_server,
        "topic": settings.kafka_topic,
        "lake_uri": settings.lake_uri,
        "s3_endpoint": settings.s3_endpoint_url,
        "checkpoint_dir": str(settings.checkpoint_dir),
        "spark_master": settings.spark_master,
        "trigger_seconds": settings.spark_trigger_seconds,
    }


class StreamingJob:
    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.settings = settings
        self.stop = stop
        self.totals = StreamTotals()
        self._events: queue.Queue[BatchProgress] = queue.Queue()
        self._last_heartbeat = 0.0
        self._ui_url: str | None = None
        self._listener: ProgressListener | None = None
        self.metrics = SparkMetrics(settings, self.totals, lambda: self._counters()[PROGRESS_KEY])

    def run(self) -> int:
        with StreamReporter(self.settings, STREAM_NAME) as reporter, self.metrics:
            self._beat(reporter, "starting")
            log.info("spark_job_starting", **describe(self.settings))
            try:
                check_checkpoint_matches_lake(self.settings)
            except LakeCheckpointMismatch as exc:
                log.error("spark_checkpoint_mismatch", error=str(exc))
                reporter.heartbeat(
                    {**self._counters(), "status": "refused", "error": str(exc)}, log=True
                )
                return exit_codes.NO_RETRY
            except LakeUnreachable as exc:
                log.error("spark_lake_unreachable", error=str(exc))
                reporter.heartbeat(
                    {**self._counters(), "status": "failed", "error": str(exc)}, log=True
                )
                return 1
            try:
                spark = build_spark_session(self.settings, app_name="finpipe-spark")
            except SettingsError as exc:
                log.error("spark_settings_invalid", error=str(exc))
                reporter.heartbeat(
                    {**self._counters(), "status": "refused", "error": str(exc)}, log=True
                )
                return exit_codes.NO_RETRY
            self._ui_url = spark.sparkContext.uiWebUrl
            try:
                return self._run_query(spark, reporter)
            finally:
                _quietly("spark_session_stop_failed", spark.stop)

    def _run_query(self, spark: SparkSession, reporter: StreamReporter) -> int:
        spark.conf.set("spark.sql.streaming.stopTimeout", STOP_TIMEOUT)
        self._listener = ProgressListener(self._events)
        spark.streams.addListener(self._listener)
        sink = LakeBatchSink(self.settings)
        query = start_query(spark, self.settings, sink) if not self.stop.is_set() else None
        if query is not None:
            log.info("spark_query_started", query_id=str(query.id), run_id=str(query.runId))
        while query is not None and not self.stop.is_set():
            self._report_batches(sink, reporter)
            error = self._query_error(query)
            if error is not None and not self.stop.is_set():
                log.error("spark_query_failed", error=root_cause(error), detail=error)
                reporter.heartbeat(
                    {**self._counters(), "status": "failed", "error": root_cause(error)}, log=True
                )
                return 1
            if time.monotonic() - self._last_heartbeat >= IDLE_HEARTBEAT_SECONDS:
                self._beat(reporter, "running")
            self.stop.wait(POLL_SECONDS)
        log.info("spark_job_stopping", reason="signal")
        if query is not None:
            # When the whole process group got the signal, the JVM is already shutting
            # down and these calls fail; the checkpoint is consistent either way.
            _quietly("spark_query_stop_failed", query.stop)
            self._report_batches(sink, reporter)
        reporter.final({**self._counters(), "status": "stopped"})
        log.info("spark_job_stopped", **self._counters())
        return 0

    @staticmethod
    def _query_error(query: StreamingQuery) -> str | None:
        """None while the query runs, else why it ended."""
        try:
            if query.isActive:
                return None
            return str(query.exception() or "the query stopped by itself")
        except Exception as exc:  # the JVM is gone
            return f"lost the Spark JVM: {exc}"

    def _report_batches(self, sink: LakeBatchSink, reporter: StreamReporter) -> None:
        while True:
            try:
                progress = self._events.get_nowait()
            except queue.Empty:
                return
            written = sink.pop(progress.batch_id)
            if written is None:  # a trigger without new data: nothing was committed
                continue
            self.totals.record(progress, written)
            self.metrics.batch_committed(progress)
            reporter.heartbeat({**self._counters(), "status": "running", "event": "batch"})
            self._last_heartbeat = time.monotonic()
            log.info("spark_batch_committed", **self.totals.last or {})

    def _counters(self) -> dict[str, Any]:
        """The totals, when the query last progressed (what a supervisor calls healthy),
        and where the Spark UI listens (Spark picks the next free port when SPARK_UI_PORT
        is busy: only the running context knows which it got)."""
        counters = self.totals.counters()
        counters[PROGRESS_KEY] = self._listener.progress_ts if self._listener else None
        if self._ui_url:
            counters[SPARK_UI_URL_KEY] = self._ui_url
        return counters

    def _beat(self, reporter: StreamReporter, status: str) -> None:
        reporter.heartbeat({**self._counters(), "status": status, "event": "idle"})
        self._last_heartbeat = time.monotonic()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(error: str, limit: int = 400) -> str:
    """A store client's error (delta-rs prints a coloured tree of causes) on one plain line:
    what a heartbeat, a run's failure and an alert can show."""
    parts = [p.strip(" ↳-") for p in _ANSI.sub("", error).splitlines()]
    text = " / ".join(p for p in parts if p)
    return text if len(text) <= limit else text[: limit - 1] + "…"


_JAVA_ERROR = re.compile(r"^:?\s*([\w$]+\.)+[\w$]*(Exception|Error): .+")


def root_cause(error: str) -> str:
    """The innermost cause of a failed query, on one line: what the run's last error and
    an alert should say (Kafka away: ``...TimeoutException: Timeout of 60000ms expired
    ...``), not the first lines of the Python traceback py4j wraps around it."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by: ")]
    if causes:
        return causes[-1]
    java = [line.lstrip(": ") for line in lines if _JAVA_ERROR.match(line)]
    return java[-1] if java else (lines[0] if lines else "the query failed without a message")


def _quietly(event: str, action: Callable[[], object]) -> None:
    try:
        action()
    except Exception as exc:
        log.warning(event, error=str(exc).splitlines()[0] if str(exc) else repr(exc))
