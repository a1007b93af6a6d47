"""Records the lake's updates as ``processed_trades`` materializations.

The Spark query commits batches to the Delta table outside Dagster. Each tick this sensor
opens the table; when its version moved past the cursor's, it reads what the commits in
between added (``finpipe.lake_log``: data-change adds; a compaction's files are not new
rows, and commits of maintenance alone record nothing) and records one
``AssetMaterialization`` whose data version is the table version,
with the rows and files added, the commit time, the newest trade time and the lag, plus
the fields of the Spark heartbeat when Spark reports here. That drives the freshness
policy and the summaries' refresh. Nothing new: no event. It also observes
``stock_ticks``: end offsets per partition and Spark's lag behind them.
"""

import json
import time
from typing import Any

from dagster import (
    AssetMaterialization,
    AssetObservation,
    DataVersion,
    DefaultSensorStatus,
    MetadataValue,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from finpipe import health, lake, lake_log
from finpipe.settings import Settings
from finpipe_dagster.lake.assets import PROCESSED_TRADES, STOCK_TICKS
from finpipe_dagster.resources import FinpipeSettings, KafkaResource, LakeTables


def data_version_tags(version: int) -> dict[str, str]:
    """An event's tags that give the asset the table version as its data version
    (``AssetMaterialization`` takes it as a tag, as Dagster's own observations do)."""
    return {DATA_VERSION_TAG: DataVersion(str(version)).value}


FIRST_TICK_COMMITS = 100
"""Without a cursor (a new sensor, another lake), the commits read to describe the
table's state: the newest ones only, so the first tick costs what a busy minute costs."""


def heartbeat_metadata(beat: dict[str, Any]) -> dict[str, Any]:
    """What the Spark heartbeat says of its latest committed batch."""
    metadata: dict[str, Any] = {
        "batch_id": MetadataValue.int(int(beat["batch_id"])),
        "batch_rows": MetadataValue.int(int(beat.get("rows") or 0)),
        "total_rows_since_start": MetadataValue.int(int(beat.get("total_rows") or 0)),
        "batch_files": MetadataValue.int(int(beat.get("files_written") or 0)),
        # Records of the batch that were not valid trades (kept in the rejects table,
        # never in this one); the `no_new_rejects` check fails on them.
        "rejects": MetadataValue.int(int(beat.get("rejects") or 0)),
        "total_rejects_since_start": MetadataValue.int(int(beat.get("total_rejects") or 0)),
    }
    for key in ("batch_duration_ms", "commit_ms", "table_version"):
        if beat.get(key) is not None:
            name = "heartbeat_table_version" if key == "table_version" else key
            metadata[name] = MetadataValue.int(int(beat[key]))
    if beat.get("end_offsets"):
        metadata["end_offsets"] = MetadataValue.json(beat["end_offsets"])
    return metadata


def batch_materialization(beat: dict[str, Any], now: float) -> AssetMaterialization:
    """A materialization describing the Spark query's latest committed batch (from its
    heartbeat alone)."""
    metadata = {"source": "spark heartbeat", **heartbeat_metadata(beat)}
    max_trade_ms = beat.get("max_trade_ts_ms")
    if max_trade_ms:
        metadata["max_trade_ts"] = MetadataValue.timestamp(max_trade_ms / 1000)
        metadata["lag_seconds"] = MetadataValue.float(round(now - max_trade_ms / 1000, 3))
    version = beat.get("table_version")
    return AssetMaterialization(
        asset_key=PROCESSED_TRADES,
        metadata=metadata,
        tags=data_version_tags(int(version)) if version is not None else None,
    )


def table_materialization(
    found: lake_log.Changes, now: float, beat: dict[str, Any] | None = None
) -> AssetMaterialization:
    """A materialization of the table at ``found.version``: what ``found`` added."""
    metadata: dict[str, Any] = {
        "source": "delta log",
        "table_version": MetadataValue.int(found.version),
        "since_version": MetadataValue.int(found.since),
    }
    if found.commit_ms is not None:
        metadata["commit_time"] = MetadataValue.timestamp(found.commit_ms / 1000)
    if found.truncated:
        # Entries of the range are gone (log retention): the counts would be short.
        metadata["log_truncated"] = MetadataValue.bool(True)
    else:
        metadata["rows_added"] = MetadataValue.int(found.rows)
        metadata["files_added"] = MetadataValue.int(len(found.adds))
    bounds = [b for a in found.adds if (b := a.bound("trade_ts", "max")) is not None]
    max_ts = max(b.timestamp() for b in bounds) if bounds else None
    if max_ts is None and beat and beat.get("max_trade_ts_ms"):
        max_ts = beat["max_trade_ts_ms"] / 1000
    if max_ts is not None:
        metadata["max_trade_ts"] = MetadataValue.timestamp(max_ts)
        metadata["lag_seconds"] = MetadataValue.float(round(now - max_ts, 3))
    if beat is not None and "batch_id" in beat:
        metadata.update(heartbeat_metadata(beat))
    return AssetMaterialization(
        asset_key=PROCESSED_TRADES,
        metadata=metadata,
        tags=data_version_tags(found.version),
    )


def poll_table(
    table: lake.LakeTable, cursor: dict[str, Any], now: float, beat: dict[str, Any] | None
) -> AssetMaterialization | None:
    """The table's new version since the cursor's, as one event (None: nothing new).
    Moves the cursor."""
    snapshot = table.open()
    if snapshot is None:
        return None
    version = snapshot.version()
    since = cursor.get("table_version")
    if cursor.get("lake") != table.uri or not isinstance(since, int) or since > version:
        since = max(version - FIRST_TICK_COMMITS, -1)  # new cursor, or another table
    elif since == version:
        return None
    cursor["table_version"], cursor["lake"] = version, table.uri
    found = lake_log.changes(table, since, version)
    if not found.adds and not found.truncated and not found.removed_data:
        # Maintenance only (a compaction's files hold rows the table had): no news, and
        # no freshness either (the lake would never look stale while compactions run).
        return None
    return table_materialization(found, now, beat)


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
    context: SensorEvaluationContext,
    finpipe: FinpipeSettings,
    kafka: KafkaResource,
    lake_tables: LakeTables,
) -> SensorResult:
    """One tick of ``processed_trades_sensor``."""
    settings = finpipe.load()
    cursor = json.loads(context.cursor or "{}")
    now = time.time()
    events: list[AssetMaterialization | AssetObservation] = []
    beat = health.read_health(settings, health.SPARK)
    event = poll_table(lake_tables.trades_table(), cursor, now, beat)
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
            "Records each new version of the lake table as a processed_trades materialization "
            "(data version = table version); observes Kafka."
        ),
    )(record_lake_updates)
