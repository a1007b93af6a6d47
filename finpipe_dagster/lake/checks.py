"""Quality checks of the lake table ``processed_trades``.

One multi-check reads the rows to check once, from one snapshot of the Delta table
(``finpipe.lake``), and reports each rule as its own check, with counts and sample rows
as metadata. ``days`` in the run config checks those days in full. Without it (the
schedule), a run checks what arrived since the last run whose checks all passed: the
table version is the watermark. Every result records the version it read and the
version checked through (``checked_through_version``); the next run reads that back from
the instance and asks the log (``finpipe.lake_log``) what the commits since added. The
new rows are found by their Kafka coordinates: per Kafka partition, every row of the
snapshot whose offset lies in the range the new files hold (the files' statistics skip the
others). That includes any older copy of a new record, so ``no_duplicate_kafka_records``
sees both copies, whichever file a compaction moved them to. With no usable watermark (a
first run, another lake, a log past its retention, files without statistics) the run
checks yesterday and today (UTC) in full. A failure keeps the watermark where it was, so
its rows are read (and fail) again until repaired.

``schema_matches_contract`` compares the table's schema and partitioning with the
contract. ``no_new_rejects`` reads the rejects table: Kafka records the Spark job kept
aside because they are not valid trades, counted by the day they were processed.
``reconciles_with_kafka`` counts, per Kafka partition, the records the lake holds between
the offset below which the last run found everything (recorded in its metadata) and the
in-flight cutoff.
"""

import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    Config,
    DagsterInstance,
    MetadataValue,
    multi_asset_check,
)
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
)
from deltalake import DeltaTable, Schema

from finpipe import contracts, lake, lake_log
from finpipe.settings import Settings, same_lake
from finpipe_dagster.lake.assets import PROCESSED_TRADES
from finpipe_dagster.partitions import today_utc
from finpipe_dagster.resources import FinpipeSettings, KafkaResource, LakeTables

KEY_COLUMNS = ("symbol", "trade_ts", "trade_date", "kafka_partition", "kafka_offset")
SAMPLE_ROWS = 5
TRADE_VALUE_TOLERANCE = 1e-9

CHECKS = {
    "schema_matches_contract": ("The table's columns, types and partitioning are the contract's."),
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
        "(rejects are kept in the rejects table with their reason)."
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
ROW_CHECKS = {*RULES, "no_duplicate_kafka_records"}

WATERMARK = "checked_through_version"
"""Result metadata: every row of the table up to this version passed the row checks."""
RECONCILED = "reconciled_upto"
"""Result metadata of ``reconciles_with_kafka``: per topic partition, the offset below
which the lake held every record."""
WATERMARK_CHECK = AssetCheckKey(PROCESSED_TRADES, "no_duplicate_kafka_records")


class QualityCheckConfig(Config):
    days: list[str] | None = None
    """ISO dates to check in full; default: what the table received since the last run
    whose checks all passed (or yesterday and today (UTC) in full, without one)."""
    in_flight_seconds: float = 120.0
    """Records younger than this may still be on their way to the lake."""


def checked_days(config: QualityCheckConfig) -> list[dt.date]:
    if config.days:
        return sorted(dt.date.fromisoformat(d) for d in config.days)
    today = today_utc()
    return [today - dt.timedelta(days=1), today]


def schema_problems(snapshot: DeltaTable | None) -> dict[str, str]:
    """Column (or ``partitioning``) -> how the table differs from the contract."""
    if snapshot is None:
        return {}
    expected = {f.name: f.type for f in Schema.from_arrow(contracts.LAKE_SCHEMA).fields}
    found = {f.name: f.type for f in snapshot.schema().fields}
    problems = {name: "missing" for name in expected if name not in found}
    problems |= {
        name: f"unexpected column ({found[name]})" for name in found if name not in expected
    }
    problems |= {
        name: f"{found[name]} (expected {kind})"
        for name, kind in expected.items()
        if name in found and found[name] != kind
    }
    partitioning = list(snapshot.metadata().partition_columns)
    if partitioning != list(contracts.LAKE_TABLE.partition_by):
        problems["partitioning"] = (
            f"{partitioning} (expected {list(contracts.LAKE_TABLE.partition_by)})"
        )
    return problems


# --- what a run reads --------------------------------------------------------------


@dataclass
class Scope:
    """The rows one run checks, from one snapshot."""

    version: int
    rows: pa.Table | ds.Dataset
    days: list[dt.date]
    description: str
    bounded: bool
    meta: dict[str, Any] = field(default_factory=dict)


def new_offset_ranges(adds: list[lake_log.FileAdd]) -> dict[int, tuple[int, int]] | None:
    """Per Kafka partition, the lowest and highest offset the added files hold (their
    log statistics); None when a file has none."""
    ranges: dict[int, tuple[int, int]] = {}
    for add in adds:
        low_p, high_p = add.min_values.get("kafka_partition"), add.max_values.get("kafka_partition")
        low, high = add.min_values.get("kafka_offset"), add.max_values.get("kafka_offset")
        if not add.rows:
            continue
        if not all(isinstance(v, int) for v in (low_p, high_p, low, high)):
            return None
        for partition in range(int(low_p), int(high_p) + 1):  # type: ignore[arg-type]
            seen = ranges.get(partition)
            lo, hi = int(low), int(high)  # type: ignore[arg-type]
            ranges[partition] = (min(seen[0], lo), max(seen[1], hi)) if seen else (lo, hi)
    return ranges


def coordinates_filter(ranges: dict[int, tuple[int, int]]) -> ds.Expression | None:
    """Rows whose Kafka coordinates fall in ``ranges`` (a file-pruning filter)."""
    found: ds.Expression | None = None
    for partition, (low, high) in sorted(ranges.items()):
        one = (
            (ds.field("kafka_partition") == partition)
            & (ds.field("kafka_offset") >= low)
            & (ds.field("kafka_offset") <= high)
        )
        found = one if found is None else found | one
    return found


def scope(
    table: lake.LakeTable,
    snapshot: DeltaTable | None,
    days: list[dt.date],
    since: int | None,
) -> Scope:
    """What to read: ``days`` in full when ``since`` is None (or unusable), else the rows
    whose Kafka coordinates the commits after ``since`` added."""
    version = snapshot.version() if snapshot is not None else -1
    whole = Scope(
        version,
        lake.snapshot_dataset(snapshot, contracts.LAKE_TABLE, days),
        days,
        "whole days",
        False,
    )
    if since is None or snapshot is None or since > version:
        return whole
    found = lake_log.changes(table, since, version)
    ranges = new_offset_ranges(found.adds) if not found.truncated else None
    if ranges is None:
        return whole
    touched = sorted({d for a in found.adds if (d := a.trade_date) is not None})
    meta = {
        "since_version": MetadataValue.int(since),
        "files_added": MetadataValue.int(len(found.adds)),
        "offset_ranges": MetadataValue.json({str(p): list(r) for p, r in ranges.items()}),
    }
    where = coordinates_filter(ranges)
    if where is None:
        empty = contracts.LAKE_SCHEMA.empty_table()
        return Scope(version, empty, touched, f"since version {since}", True, meta)
    # Bounded: read once (not once per rule); the statistics skip every other file.
    rows = lake.snapshot_dataset(snapshot, contracts.LAKE_TABLE).to_table(filter=where)
    return Scope(version, rows, touched, f"since version {since}", True, meta)


# --- what earlier runs recorded --------------------------------------------------------


def latest_metadata(instance: DagsterInstance, key: AssetCheckKey) -> dict[str, Any]:
    """The metadata of ``key``'s latest completed evaluation ({} without one)."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=1, status=set(COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES)
    )
    for record in records:
        event = record.event.dagster_event if record.event is not None else None
        evaluation = event.event_specific_data if event is not None else None
        metadata = getattr(evaluation, "metadata", None) or {}
        return {k: getattr(v, "value", v) for k, v in metadata.items()}
    return {}


def previous_watermark(instance: DagsterInstance, settings: Settings) -> int | None:
    found = latest_metadata(instance, WATERMARK_CHECK)
    mark = found.get(WATERMARK)
    if not same_lake(found.get("lake"), settings.lake_uri) or not isinstance(mark, int):
        return None
    return mark if mark >= 0 else None


def previous_reconciled(instance: DagsterInstance, settings: Settings) -> dict[int, int]:
    found = latest_metadata(instance, AssetCheckKey(PROCESSED_TRADES, "reconciles_with_kafka"))
    upto = found.get(RECONCILED)
    if not same_lake(found.get("lake"), settings.lake_uri) or not isinstance(upto, dict):
        return {}
    if upto.get("topic") != settings.kafka_topic:
        return {}
    return {int(p): int(o) for p, o in (upto.get("offsets") or {}).items()}


REJECT_SAMPLE_VALUE_CHARS = 200


def rejects_in_days(lake_tables: LakeTables, days: list[dt.date]) -> pa.Table:
    """Rows of the rejects table processed in the checked days (its partitions)."""
    dataset = lake_tables.rejects_dataset()
    table = dataset.to_table(filter=ds.field("processed_date").isin(pa.array(days, pa.date32())))
    return table.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])


@dataclass(frozen=True)
class Outcome:
    """One check's finding, before the run's common metadata is added."""

    name: str
    failures: int
    checked: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.failures == 0


def rejects_outcome(table: pa.Table) -> Outcome:
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
    return Outcome(
        "no_new_rejects", table.num_rows, table.num_rows, {"sample": sample, "reasons": reasons}
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


def _result(outcome: Outcome, common: dict[str, Any]) -> AssetCheckResult:
    metadata = {**outcome.metadata, **common}
    return AssetCheckResult(
        check_name=outcome.name,
        asset_key=PROCESSED_TRADES,
        passed=outcome.passed,
        severity=AssetCheckSeverity.WARN if outcome.name in WARN_ONLY else AssetCheckSeverity.ERROR,
        metadata={
            "failing_rows": MetadataValue.int(outcome.failures),
            "rows_checked": MetadataValue.int(outcome.checked),
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
    lake_tables: LakeTables,
    kafka: KafkaResource,
) -> Iterator[AssetCheckResult]:
    settings = finpipe.load()
    selected = {key.name for key in context.selected_asset_check_keys}
    # Each attempt opens the newest snapshot: a vacuum may delete what a slow one named.
    yield from lake.read_reloading(
        lambda: _evaluate(settings, context.instance, selected, config, lake_tables, kafka),
        what="lake quality checks",
    )


def _evaluate(
    settings: Settings,
    instance: DagsterInstance,
    selected: set[str],
    config: QualityCheckConfig,
    lake_tables: LakeTables,
    kafka: KafkaResource,
) -> list[AssetCheckResult]:
    table = lake_tables.trades_table()
    snapshot = table.open()
    scheduled = not config.days
    before = previous_watermark(instance, settings)
    found = scope(table, snapshot, checked_days(config), before if scheduled else None)
    outcomes: list[Outcome] = []
    con = lake_tables.connect()
    con.register("processed_trades", found.rows)
    try:
        rows = _scalar(con, "SELECT count(*) FROM processed_trades")
        if "schema_matches_contract" in selected:
            problems = schema_problems(snapshot)
            outcomes.append(
                Outcome("schema_matches_contract", len(problems), rows, {"problems": problems})
            )
        for name, where in RULES.items():
            if name in selected:
                failures, sample = _count_and_sample(con, where)
                outcomes.append(Outcome(name, failures, rows, {"sample": sample}))
        if "no_duplicate_kafka_records" in selected:
            outcomes.append(_duplicates(con, rows))
    finally:
        con.close()
    if "no_new_rejects" in selected:
        outcomes.append(rejects_outcome(rejects_in_days(lake_tables, checked_days(config))))
    reconciled = previous_reconciled(instance, settings) if scheduled else {}
    if "reconciles_with_kafka" in selected:
        con = lake_tables.with_lake(None)  # Kafka's retained range may span any day
        try:
            missing, detail, complete = reconciliation(
                con, kafka, config.in_flight_seconds, reconciled
            )
        finally:
            con.close()
        # A run for named days counts Kafka's whole range; it leaves the record alone.
        upto = complete if scheduled else reconciled
        outcomes.append(
            Outcome(
                "reconciles_with_kafka",
                missing,
                rows,
                {
                    "partitions": detail,
                    RECONCILED: {"topic": settings.kafka_topic, "offsets": upto},
                },
            )
        )
    # The watermark moves only when a scheduled run checked every row rule and all passed.
    every_rule = selected >= ROW_CHECKS
    passed = all(o.passed for o in outcomes if o.name not in WARN_ONLY)
    watermark = found.version if scheduled and every_rule and passed else before
    common: dict[str, Any] = {
        "days": MetadataValue.text(", ".join(d.isoformat() for d in found.days)),
        "scope": MetadataValue.text(found.description),
        "table_version": MetadataValue.int(found.version),
        WATERMARK: MetadataValue.int(watermark if watermark is not None else -1),
        "lake": MetadataValue.text(settings.lake_uri),
        **found.meta,
    }
    return [_result(o, common) for o in outcomes]


def _duplicates(con: duckdb.DuckDBPyConnection, rows: int) -> Outcome:
    duplicates = (
        con.sql(
            "SELECT kafka_partition, kafka_offset, count(*) AS copies FROM processed_trades "
            "GROUP BY ALL HAVING count(*) > 1 ORDER BY copies DESC LIMIT 1000"
        )
        .to_arrow_table()
        .to_pylist()
    )
    extra = sum(d["copies"] - 1 for d in duplicates)
    return Outcome("no_duplicate_kafka_records", extra, rows, {"sample": duplicates[:SAMPLE_ROWS]})
