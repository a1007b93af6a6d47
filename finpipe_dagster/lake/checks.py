"""Quality checks of the lake table ``processed_trades``.

One multi-check reads the checked days once through ``finpipe.lake`` (compaction-aware)
and reports each rule as its own check, with counts and sample rows as metadata. By
default it checks yesterday and today (UTC); ``days`` in the run config picks others.
``no_new_rejects`` reads the table's ``_rejects`` folder: Kafka records the Spark job
kept aside because they are not valid trades, counted by the day they were processed.
"""

import concurrent.futures
import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    Config,
    MetadataValue,
    multi_asset_check,
)

from finpipe import contracts, lake
from finpipe.settings import Settings
from finpipe_dagster.lake import checked_span
from finpipe_dagster.lake.assets import PROCESSED_TRADES
from finpipe_dagster.partitions import today_utc
from finpipe_dagster.resources import DuckDBResource, FinpipeSettings, KafkaResource

KEY_COLUMNS = ("symbol", "trade_ts", "trade_date", "kafka_partition", "kafka_offset")
SAMPLE_ROWS = 5
SCHEMA_FILES_LIMIT = 500
TRADE_VALUE_TOLERANCE = 1e-9

CHECKS = {
    "schema_matches_contract": "Every data file has the contract's columns and types.",
    "no_null_keys": f"No NULL in {', '.join(KEY_COLUMNS)}.",
    "price_positive": "price > 0.",
    "volume_not_negative": "volume >= 0.",
    "trade_value_is_price_times_volume": "trade_value = price x volume (relative 1e-9).",
    "no_duplicate_kafka_records": "No two rows share (kafka_partition, kafka_offset).",
    "reconciles_with_kafka": (
        "Every Kafka record older than the in-flight window is in the lake exactly once."
    ),
    "no_new_rejects": (
        "No Kafka record processed in the checked days was rejected as not a valid trade "
        "(rejects are kept in the table's _rejects folder with their reason)."
    ),
}
WARN_ONLY = {"reconciles_with_kafka"}
RULES = {
    "no_null_keys": " OR ".join(f"{c} IS NULL" for c in KEY_COLUMNS),
    "price_positive": "price IS NULL OR NOT price > 0",
    "volume_not_negative": "volume IS NULL OR volume < 0",
    "trade_value_is_price_times_volume": (
        "trade_value IS NULL OR abs(trade_value - price * volume) > "
        f"{TRADE_VALUE_TOLERANCE} * greatest(1, abs(price * volume))"
    ),
}
"""The row rules: a row fails when it matches the condition."""


class QualityCheckConfig(Config):
    days: list[str] | None = None
    """ISO dates to check in full; default: what arrived in yesterday and today (UTC)
    since the last run whose checks all passed (``checked_span.py``)."""
    in_flight_seconds: float = 120.0
    """Records younger than this may still be on their way to the lake."""


def checked_days(config: QualityCheckConfig) -> list[dt.date]:
    if config.days:
        return sorted(dt.date.fromisoformat(d) for d in config.days)
    today = today_utc()
    return [today - dt.timedelta(days=1), today]


def schema_problems(
    settings: Settings, days: list[dt.date], files: list[lake.LakeFile] | None = None
) -> dict[str, str]:
    """File -> what is wrong with its columns (newest files first, up to a limit)."""
    fs = lake.s3_filesystem(settings)
    listed = files if files is not None else lake.list_lake_files(settings, days, filesystem=fs)
    files = sorted(listed, key=lambda f: f.path)
    problems = {}
    expected = {f.name: f.type for f in contracts.LAKE_SCHEMA}
    chosen = files[-SCHEMA_FILES_LIMIT:]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        schemas = list(pool.map(lambda f: pq.read_schema(f.path, filesystem=fs), chosen))
    for file, schema in zip(chosen, schemas, strict=True):
        found = {f.name: f.type for f in schema}
        missing = sorted(set(expected) - set(found))
        wrong = sorted(
            f"{n}: {found[n]} (expected {t})"
            for n, t in expected.items()
            if n in found and found[n] != t
        )
        if missing or wrong:
            problems[file.path] = "; ".join(
                part for part in (f"missing {missing}" if missing else "", *wrong) if part
            )
    return problems


REJECT_SAMPLE_VALUE_CHARS = 200


def rejects_in_days(
    settings: Settings, days: list[dt.date], fs: pafs.FileSystem | None = None
) -> pa.Table:
    """Rows of ``_rejects`` processed in the checked days (objects older than the first
    day are not even opened: a rejects object is written once, by its batch)."""
    fs = fs or lake.s3_filesystem(settings)
    folder = f"{settings.s3_bucket}/{settings.lake_prefix}/{contracts.LAKE_REJECTS_DIR}"
    start = dt.datetime.combine(days[0], dt.time(), dt.UTC)
    end = dt.datetime.combine(days[-1] + dt.timedelta(days=1), dt.time(), dt.UTC)
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    paths = [
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and contracts.parse_lake_object_name(i.base_name) is not None
        and (i.mtime is None or i.mtime >= start)
    ]
    if not paths:
        return contracts.REJECTS_SCHEMA.empty_table()
    table = pa.concat_tables(
        pq.read_table(path, filesystem=fs, schema=contracts.REJECTS_SCHEMA) for path in paths
    )
    when = table["processed_ts"]
    in_days = pc.and_(
        pc.greater_equal(when, pa.scalar(start, when.type)),
        pc.less(when, pa.scalar(end, when.type)),
    )
    return table.filter(in_days).sort_by(
        [("kafka_partition", "ascending"), ("kafka_offset", "ascending")]
    )


def rejects_result(table: pa.Table, days_meta: dict[str, Any]) -> AssetCheckResult:
    sample = [
        {
            "kafka_partition": row["kafka_partition"],
            "kafka_offset": row["kafka_offset"],
            "reason": row["reason"],
            "value": (row["value"] or "")[:REJECT_SAMPLE_VALUE_CHARS],
        }
        for row in table.slice(0, SAMPLE_ROWS).to_pylist()
    ]
    reasons: dict[str, int] = {}
    for reason in table["reason"].to_pylist():
        kind = reason.split(":", 1)[0]  # "not JSON", "not a TradeRecord", "out of range"
        reasons[kind] = reasons.get(kind, 0) + 1
    return _result(
        "no_new_rejects",
        table.num_rows,
        table.num_rows,
        sample=sample,
        reasons=reasons,
        **days_meta,
    )


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> int:
    rows = con.execute(sql, params or {}).fetchall()
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def _count_and_sample(con: duckdb.DuckDBPyConnection, where: str) -> tuple[int, list[dict]]:
    count = _scalar(con, f"SELECT count(*) FROM processed_trades WHERE {where}")
    sample = (
        con.sql(
            "SELECT symbol, price, volume, trade_value, trade_ts, kafka_partition, kafka_offset "
            f"FROM processed_trades WHERE {where} LIMIT {SAMPLE_ROWS}"
        )
        .to_arrow_table()
        .to_pylist()
    )
    return int(count), sample


def _jsonable(value: Any) -> Any:
    """Sample rows hold timestamps; metadata must be plain JSON."""
    return json.loads(json.dumps(value, default=str))


def _result(name: str, failures: int, checked: int, **metadata: Any) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=name,
        asset_key=PROCESSED_TRADES,
        passed=failures == 0,
        severity=AssetCheckSeverity.WARN if name in WARN_ONLY else AssetCheckSeverity.ERROR,
        metadata={
            "failing_rows": MetadataValue.int(failures),
            "rows_checked": MetadataValue.int(checked),
            **{
                k: v if isinstance(v, MetadataValue) else MetadataValue.json(_jsonable(v))
                for k, v in metadata.items()
            },
        },
    )


def reconciliation(
    con: duckdb.DuckDBPyConnection,
    kafka: KafkaResource,
    in_flight_seconds: float,
    reconciled: dict[int, int] | None = None,
) -> tuple[int, dict[str, Any], dict[int, int]]:
    """Per partition: Kafka records [from, cutoff) vs lake rows with offsets in that range.

    ``cutoff`` is the first offset written within the in-flight window, so records
    younger than it are not yet expected in the lake. ``from`` is the partition's low
    watermark, or the offset below which an earlier run found everything (``reconciled``)
    when that is higher. Returns the missing count, the detail per partition, and the
    offsets below which everything is now found (to start the next run from).
    """
    cutoff_ms = int((time.time() - in_flight_seconds) * 1000)
    cutoffs = kafka.offsets_before(cutoff_ms)
    marks = {w.partition: w for w in kafka.watermarks()}
    reconciled = reconciled or {}
    detail: dict[str, Any] = {}
    complete: dict[int, int] = {}
    missing_total = 0
    for partition, cutoff in sorted(cutoffs.items()):
        mark = marks.get(partition)
        low = mark.low if mark else 0
        start = reconciled.get(partition, low)
        # Below the low watermark: deleted by retention. Past the end: another topic of
        # the same name (recreated), whose offsets start again.
        if start < low or (mark is not None and start > mark.high):
            start = low
        expected = max(cutoff - start, 0)
        found = _scalar(
            con,
            "SELECT count(DISTINCT kafka_offset) FROM processed_trades "
            "WHERE kafka_partition = $p AND kafka_offset >= $low AND kafka_offset < $cutoff",
            {"p": partition, "low": start, "cutoff": cutoff},
        )
        missing_total += expected - int(found)
        complete[partition] = max(cutoff, start) if int(found) >= expected else start
        detail[str(partition)] = {
            "kafka": expected,
            "lake": int(found),
            "from": start,
            "to": cutoff,
        }
    return missing_total, detail, complete


@multi_asset_check(
    specs=[
        AssetCheckSpec(name, asset=PROCESSED_TRADES, description=description)
        for name, description in CHECKS.items()
    ],
    can_subset=True,
)
def processed_trades_quality(
    context: AssetCheckExecutionContext,
    config: QualityCheckConfig,
    finpipe: FinpipeSettings,
    lake_duckdb: DuckDBResource,
    kafka: KafkaResource,
) -> Iterator[AssetCheckResult]:
    settings = finpipe.load()
    days = checked_days(config)
    selected = {key.name for key in context.selected_asset_check_keys}
    # Each attempt lists the lake afresh: a compaction may delete what a slow one listed.
    yield from lake.read_relisting(
        lambda: _evaluate(settings, days, selected, config, lake_duckdb, kafka),
        what="lake quality checks",
    )


def _evaluate(
    settings: Settings,
    days: list[dt.date],
    selected: set[str],
    config: QualityCheckConfig,
    lake_duckdb: DuckDBResource,
    kafka: KafkaResource,
) -> list[AssetCheckResult]:
    results: list[AssetCheckResult] = []
    fs = lake.s3_filesystem(settings)
    spans = _spans(settings, fs, config)
    files = (
        [f for span in spans for f in span.files]
        if spans is not None
        else lake.list_lake_files(settings, days, filesystem=fs)
    )
    con = lake_duckdb.connect()
    dataset = lake.files_dataset(files, fs)
    # A scheduled run's share is bounded: read it once, not once per rule.
    con.register("processed_trades", dataset.to_table() if spans is not None else dataset)
    try:
        rows = _scalar(con, "SELECT count(*) FROM processed_trades")
        day_meta = {"days": MetadataValue.text(", ".join(d.isoformat() for d in days))}
        if spans is not None:
            day_meta["checked_spans"] = MetadataValue.json(
                {s.day.isoformat(): "whole day" if s.full else "new objects" for s in spans}
            )
            day_meta["objects_read"] = MetadataValue.int(len(files))
        if "schema_matches_contract" in selected:
            problems = schema_problems(settings, days, files)
            results.append(
                _result(
                    "schema_matches_contract", len(problems), rows, bad_files=problems, **day_meta
                )
            )
        for name, where in RULES.items():
            if name in selected:
                failures, sample = _count_and_sample(con, where)
                results.append(_result(name, failures, rows, sample=sample, **day_meta))
        if "no_duplicate_kafka_records" in selected:
            results.append(_duplicates(con, rows, day_meta))
    finally:
        con.close()
    if "no_new_rejects" in selected:
        results.append(rejects_result(rejects_in_days(settings, days), day_meta))
    if "reconciles_with_kafka" in selected:
        topic = settings.kafka_topic
        # A scheduled run counts from where the last one found everything; a run for
        # named days counts Kafka's whole retained range.
        since = checked_span.load_reconciled(settings, fs, topic) if spans is not None else {}
        con = lake_duckdb.with_lake(None)  # Kafka's retained range may span any day
        try:
            missing, detail, complete = reconciliation(con, kafka, config.in_flight_seconds, since)
        finally:
            con.close()
        if complete != since:
            checked_span.save_reconciled(settings, fs, topic, complete)
        results.append(_result("reconciles_with_kafka", missing, rows, partitions=detail))
    # What passed need not be read again; a failure keeps its rows in the next run.
    every_rule = selected >= set(RULES) | {"no_duplicate_kafka_records"}
    if (
        spans is not None
        and every_rule
        and all(r.passed for r in results if r.check_name not in WARN_ONLY)
    ):
        for span in spans:
            checked_span.save_span(settings, fs, span.day, span.span)
    return results


def _spans(
    settings: Settings, fs: Any, config: QualityCheckConfig
) -> list[checked_span.DayToCheck] | None:
    """The scheduled run's share of yesterday and today; None: ``days`` asks for full days."""
    if config.days:
        return None
    today = today_utc()
    found = [
        checked_span.day_to_check(settings, fs, day, today)
        for day in (today - dt.timedelta(days=1), today)
    ]
    return [span for span in found if span is not None]


def _duplicates(
    con: duckdb.DuckDBPyConnection, rows: int, day_meta: dict[str, Any]
) -> AssetCheckResult:
    duplicates = (
        con.sql(
            "SELECT kafka_partition, kafka_offset, count(*) AS copies FROM processed_trades "
            "GROUP BY ALL HAVING count(*) > 1 ORDER BY copies DESC LIMIT 1000"
        )
        .to_arrow_table()
        .to_pylist()
    )
    extra = sum(d["copies"] - 1 for d in duplicates)
    return _result(
        "no_duplicate_kafka_records", extra, rows, sample=duplicates[:SAMPLE_ROWS], **day_meta
    )
