"""Records the lake's updates as ``processed_trades`` materializations.

The Spark query commits batches outside Dagster. This sensor turns each new committed
batch (from the Spark heartbeat) into an ``AssetMaterialization`` with rows, latest trade
time, files and lag; that drives the freshness policy and the summaries' refresh. When no
Spark heartbeat exists (Spark runs elsewhere) it polls the lake for new files instead.
It also observes ``stock_ticks``: end offsets per partition and Spark's lag behind them.
"""

import datetime as dt
import json
import time
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from dagster import (
    AssetMaterialization,
    AssetObservation,
    DefaultSensorStatus,
    MetadataValue,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from finpipe import health, lake
from finpipe.settings import Settings
from finpipe_dagster.lake.assets import PROCESSED_TRADES, STOCK_TICKS
from finpipe_dagster.resources import FinpipeSettings, KafkaResource

NEW_FILE_METADATA_LIMIT = 200


def batch_materialization(beat: dict[str, Any], now: float) -> AssetMaterialization:
    """A materialization describing the Spark query's latest committed batch."""
    max_trade_ms = beat.get("max_trade_ts_ms")
    metadata: dict[str, Any] = {
        "source": "spark heartbeat",
        "batch_id": MetadataValue.int(int(beat["batch_id"])),
        "rows": MetadataValue.int(int(beat.get("rows") or 0)),
        "total_rows_since_start": MetadataValue.int(int(beat.get("total_rows") or 0)),
        "files": MetadataValue.int(int(beat.get("files_written") or 0)),
        # Records of the batch that were not valid trades (kept in _rejects, never in the
        # table); the `no_new_rejects` check fails on them.
        "rejects": MetadataValue.int(int(beat.get("rejects") or 0)),
        "total_rejects_since_start": MetadataValue.int(int(beat.get("total_rejects") or 0)),
    }
    if beat.get("batch_duration_ms") is not None:
        metadata["batch_duration_ms"] = MetadataValue.int(int(beat["batch_duration_ms"]))
    if beat.get("end_offsets"):
        metadata["end_offsets"] = MetadataValue.json(beat["end_offsets"])
    if max_trade_ms:
        metadata["max_trade_ts"] = MetadataValue.timestamp(max_trade_ms / 1000)
        metadata["lag_seconds"] = MetadataValue.float(round(now - max_trade_ms / 1000, 3))
    return AssetMaterialization(asset_key=PROCESSED_TRADES, metadata=metadata)


def _max_trade_ts(metadata: pq.FileMetaData) -> float | None:
    column = metadata.schema.names.index("trade_ts") if "trade_ts" in metadata.schema.names else -1
    best = None
    for i in range(metadata.num_row_groups if column >= 0 else 0):
        stats = metadata.row_group(i).column(column).statistics
        if stats is not None and stats.has_min_max:
            value = stats.max
            ts = value.timestamp() if isinstance(value, dt.datetime) else float(value) / 1000
            best = ts if best is None else max(best, ts)
    return best


def poll_lake(
    settings: Settings, since_mtime: float, now: float, fs: pafs.FileSystem | None = None
) -> tuple[AssetMaterialization | None, float]:
    """New data files of yesterday and today since ``since_mtime``; (event, new cursor)."""
    fs = fs or lake.s3_filesystem(settings)
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    files = lake.list_lake_files(settings, [today - dt.timedelta(days=1), today], filesystem=fs)
    infos = fs.get_file_info([f.path for f in files])
    new = sorted(
        (i for i in infos if i.mtime is not None and i.mtime.timestamp() > since_mtime),
        key=lambda i: i.mtime,  # type: ignore[arg-type, return-value]
    )
    if not new:
        return None, since_mtime
    rows = 0
    max_ts = None
    for info in new[-NEW_FILE_METADATA_LIMIT:]:
        meta = pq.read_metadata(info.path, filesystem=fs)
        rows += meta.num_rows
        file_max = _max_trade_ts(meta)
        if file_max is not None:
            max_ts = file_max if max_ts is None else max(max_ts, file_max)
    metadata: dict[str, Any] = {
        "source": "lake poll",
        "files": MetadataValue.int(len(new)),
        "rows": MetadataValue.int(rows),
        "files_in_recent_days": MetadataValue.int(len(files)),
    }
    if len(new) > NEW_FILE_METADATA_LIMIT:
        metadata["rows_counted_in_newest_files"] = MetadataValue.int(NEW_FILE_METADATA_LIMIT)
    if max_ts is not None:
        metadata["max_trade_ts"] = MetadataValue.timestamp(max_ts)
        metadata["lag_seconds"] = MetadataValue.float(round(now - max_ts, 3))
    newest = new[-1].mtime.timestamp()  # type: ignore[union-attr]
    return AssetMaterialization(asset_key=PROCESSED_TRADES, metadata=metadata), newest


def producer_backlog_metadata(beat: dict[str, Any] | None) -> dict[str, Any]:
    """What the producer holds in its receive log but Kafka does not have yet."""
    metadata: dict[str, Any] = {}
    for key in health.PRODUCER_BACKLOG_KEYS:
        value = (beat or {}).get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            metadata[f"producer_{key}"] = MetadataValue.int(value)
        elif isinstance(value, float):
            metadata[f"producer_{key}"] = MetadataValue.float(value)
        else:
            metadata[f"producer_{key}"] = MetadataValue.text(str(value))
    return metadata


def topic_observation(
    kafka: KafkaResource, spark_offsets: dict[str, Any] | None, producer_beat: dict | None = None
) -> tuple[AssetObservation, int]:
    """End offsets of the topic, how far behind Spark is, and the producer's backlog."""
    marks = kafka.watermarks()
    total = sum(m.high for m in marks)
    metadata: dict[str, Any] = {
        "end_offsets": MetadataValue.json({str(m.partition): m.high for m in marks}),
        "retained_records": MetadataValue.int(sum(m.high - m.low for m in marks)),
        **producer_backlog_metadata(producer_beat),
    }
    if spark_offsets:
        processed = {str(k): int(v) for k, v in spark_offsets.items()}
        lag = sum(max(m.high - processed.get(str(m.partition), m.high), 0) for m in marks)
        metadata["spark_lag_records"] = MetadataValue.int(lag)
    return AssetObservation(asset_key=STOCK_TICKS, metadata=metadata), total


def _spark_offsets(beat: dict[str, Any] | None, topic: str) -> dict[str, Any] | None:
    """Spark reports offsets as {topic: {partition: offset}} or {partition: offset}."""
    offsets = (beat or {}).get("end_offsets")
    if isinstance(offsets, dict) and topic in offsets and isinstance(offsets[topic], dict):
        return offsets[topic]
    return offsets if isinstance(offsets, dict) else None


def record_lake_updates(
    context: SensorEvaluationContext, finpipe: FinpipeSettings, kafka: KafkaResource
) -> SensorResult:
    """One tick of ``processed_trades_sensor``."""
    settings = finpipe.load()
    cursor = json.loads(context.cursor or "{}")
    now = time.time()
    events: list[AssetMaterialization | AssetObservation] = []
    beat = health.read_health(settings, health.SPARK)
    if beat is not None:  # Spark reports here: its committed batches are the updates
        if "batch_id" in beat and beat["batch_id"] != cursor.get("batch_id"):
            events.append(batch_materialization(beat, now))
            cursor["batch_id"] = beat["batch_id"]
    else:
        event, cursor["lake_mtime"] = poll_lake(settings, float(cursor.get("lake_mtime", 0)), now)
        if event is not None:
            events.append(event)
    try:
        producer_beat = health.read_health(settings, "producer")
        observation, total = topic_observation(
            kafka, _spark_offsets(beat, settings.kafka_topic), producer_beat
        )
        backlog = (producer_beat or {}).get("backlog_records")
        if total != cursor.get("topic_end_total") or backlog != cursor.get("producer_backlog"):
            cursor["producer_backlog"] = backlog
            events.append(observation)
            cursor["topic_end_total"] = total
    except Exception as exc:  # the lake's events still count when Kafka is down
        context.log.warning(f"stock_ticks not observed: {exc}")
    context.log.info(f"{len(events)} asset event(s); cursor {cursor}")
    return SensorResult(asset_events=events, cursor=json.dumps(cursor))


def build_processed_trades_sensor(settings: Settings) -> SensorDefinition:
    return sensor(
        name="processed_trades_sensor",
        minimum_interval_seconds=settings.processed_trades_sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Records new Spark batches as processed_trades materializations; observes Kafka."
        ),
    )(record_lake_updates)
