"""Quality checks of processed_trades on a seeded Delta lake and a real Kafka topic."""

import datetime as dt
from collections.abc import Iterator

import pyarrow as pa
import pytest
from confluent_kafka import Producer
from dagster import (
    AssetSelection,
    DagsterInstance,
    Definitions,
    define_asset_job,
    instance_for_test,
)
from deltalake import write_deltalake

from finpipe import contracts, lake
from finpipe.settings import load_settings
from finpipe_dagster.lake.assets import PROCESSED_TRADES, processed_trades_spec
from finpipe_dagster.lake.checks import processed_trades_quality
from infra import services

from .conftest import DAY, SeededLake


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    """One instance for a test's runs: a run reads what the previous one recorded."""
    with instance_for_test() as test_instance:
        yield test_instance


def run_checks(seeded: SeededLake, instance: DagsterInstance | None = None) -> dict[str, object]:
    defs = Definitions(
        assets=[processed_trades_spec(load_settings())],
        asset_checks=[processed_trades_quality],
        jobs=[define_asset_job("checks", AssetSelection.checks_for_assets(PROCESSED_TRADES))],
        resources=seeded.resources,
    )
    result = defs.resolve_job_def("checks").execute_in_process(
        run_config={"ops": {"processed_trades_quality": {"config": {"days": [DAY.isoformat()]}}}},
        instance=instance,
        raise_on_error=False,
    )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def produce_matching_records(seeded: SeededLake, extra: dict[int, int] | None = None) -> None:
    """The Kafka side of the seeded rows (plus ``extra`` records per partition that the lake
    lacks), with record times well outside the in-flight window."""
    services.ensure_topics(seeded.settings, [seeded.settings.kafka_topic])
    producer = Producer({"bootstrap.servers": seeded.settings.kafka_server, "acks": "all"})
    old = int((dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).timestamp() * 1000)
    for partition, count in {**seeded.next_offset, **(extra or {})}.items():
        for _ in range(count):
            producer.produce(seeded.settings.kafka_topic, b"{}", partition=partition, timestamp=old)
    assert producer.flush(30) == 0


def write_rejects(
    seeded: SeededLake, rows: list[tuple[int, int, str]], processed: dt.date = DAY
) -> None:
    """Rejects as the Spark job commits them, processed at noon of ``processed``."""
    noon = dt.datetime.combine(processed, dt.time(12), dt.UTC)
    table = pa.Table.from_pylist(
        [
            {
                "kafka_partition": p,
                "kafka_offset": o,
                "kafka_timestamp": noon,
                "key": "AAPL",
                "value": "{not a trade",
                "reason": reason,
                "processed_ts": noon,
                "processed_date": processed,
            }
            for p, o, reason in rows
        ],
        schema=contracts.REJECTS_SCHEMA,
    )
    write_deltalake(lake.rejects_table(seeded.settings).ensure(), table, mode="append")


def write_with_an_extra_column(seeded: SeededLake, rows: list[dict]) -> None:
    """A writer that evolved the table's schema (a column the contract does not have)."""
    table = pa.Table.from_pylist(rows, schema=contracts.LAKE_SCHEMA)
    table = table.append_column("venue", pa.array(["XNAS"] * len(rows)))
    write_deltalake(seeded.table.ensure(), table, mode="append", schema_mode="merge")
    seeded.rows.extend(rows)


def test_checks_pass_on_good_data(seeded: SeededLake) -> None:
    seeded.write(seeded.trades(DAY, 80, seed=5))
    seeded.write(seeded.trades(DAY, 40, seed=6))
    produce_matching_records(seeded)
    evaluations = run_checks(seeded)
    assert len(evaluations) == 8
    failed = {n: e.metadata for n, e in evaluations.items() if not e.passed}
    assert failed == {}
    assert evaluations["no_new_rejects"].metadata["failing_rows"].value == 0
    assert evaluations["no_null_keys"].metadata["rows_checked"].value == 120
    partitions = evaluations["reconciles_with_kafka"].metadata["partitions"].value
    assert sum(p["kafka"] for p in partitions.values()) == 120


def test_checks_fail_with_metadata_on_bad_data(seeded: SeededLake) -> None:
    good = seeded.trades(DAY, 30, seed=7)
    seeded.write(good)
    produce_matching_records(seeded, extra={2: 3})  # 3 records the lake never got
    seeded.write([good[0]])  # the same Kafka record again, in another batch file
    negative = seeded.trades(DAY, 1, seed=8)[0] | {"price": -1.5}
    negative["trade_value"] = negative["price"] * negative["volume"]
    seeded.write([negative])
    write_with_an_extra_column(seeded, seeded.trades(DAY, 1, seed=9))
    write_rejects(seeded, [(0, 41, "not JSON: truncated"), (1, 7, "out of range: price -1")])
    write_rejects(seeded, [(0, 5, "out of range: old")], processed=DAY - dt.timedelta(days=2))

    evaluations = run_checks(seeded)
    failed = {n for n, e in evaluations.items() if not e.passed}
    assert failed == {
        "schema_matches_contract",
        "price_positive",
        "no_duplicate_kafka_records",
        "reconciles_with_kafka",
        "no_new_rejects",
    }
    rejects = evaluations["no_new_rejects"]
    assert rejects.severity.value == "ERROR"
    assert rejects.metadata["failing_rows"].value == 2  # the older day's reject is not new
    assert rejects.metadata["reasons"].value == {"not JSON": 1, "out of range": 1}
    assert [r["kafka_offset"] for r in rejects.metadata["sample"].value] == [41, 7]
    reconcile = evaluations["reconciles_with_kafka"]
    assert reconcile.severity.value == "WARN"
    assert reconcile.metadata["failing_rows"].value == 3
    assert reconcile.metadata["partitions"].value["2"] == {
        "kafka": 3,
        "lake": 0,
        "from": 0,
        "to": 3,
    }
    schema = evaluations["schema_matches_contract"].metadata["problems"].value
    assert list(schema) == ["venue"] and schema["venue"].startswith("unexpected column")
    price = evaluations["price_positive"].metadata
    assert price["failing_rows"].value == 1
    assert price["sample"].value[0]["price"] == -1.5
    duplicates = evaluations["no_duplicate_kafka_records"].metadata
    assert duplicates["failing_rows"].value == 1
    assert duplicates["sample"].value[0]["kafka_offset"] == good[0]["kafka_offset"]
    assert evaluations["no_null_keys"].passed


def run_scheduled_checks(seeded: SeededLake, instance: DagsterInstance) -> dict[str, object]:
    """The scheduled run: no ``days``: what the table received since the checks passed."""
    defs = Definitions(
        assets=[processed_trades_spec(load_settings())],
        asset_checks=[processed_trades_quality],
        jobs=[define_asset_job("checks", AssetSelection.checks_for_assets(PROCESSED_TRADES))],
        resources=seeded.resources,
    )
    result = defs.resolve_job_def("checks").execute_in_process(
        instance=instance, raise_on_error=False
    )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_scheduled_checks_read_only_what_arrived_since_they_last_passed(
    seeded: SeededLake, instance: DagsterInstance
) -> None:
    from finpipe_dagster.partitions import today_utc

    services.ensure_topics(seeded.settings, [seeded.settings.kafka_topic])
    today = today_utc()
    yesterday = today - dt.timedelta(days=1)
    seeded.write(seeded.trades(yesterday, 30, seed=11))
    seeded.write(seeded.trades(today, 50, seed=12))
    first = run_scheduled_checks(seeded, instance)
    assert first["no_null_keys"].passed
    assert first["no_null_keys"].metadata["rows_checked"].value == 80  # both days in full
    assert first["no_null_keys"].metadata["scope"].value == "whole days"
    checked = first["no_null_keys"].metadata["checked_through_version"].value

    version = seeded.write(seeded.trades(today, 20, seed=13))
    second = run_scheduled_checks(seeded, instance)
    assert second["no_null_keys"].metadata["rows_checked"].value == 20  # only the new batch
    assert second["no_null_keys"].metadata["scope"].value == f"since version {checked}"
    assert second["no_null_keys"].metadata["checked_through_version"].value == version

    bad = seeded.trades(today, 5, seed=14)
    bad[0]["price"] = -1.0
    seeded.write(bad)
    for _ in range(2):  # a failure stays failing: its rows are read again
        failing = run_scheduled_checks(seeded, instance)
        assert not failing["price_positive"].passed
        assert failing["price_positive"].metadata["failing_rows"].value == 1

    # a record written twice (a later batch repeats an offset already checked), then the
    # day compacted: the new file's offsets reach the old copy, wherever it now is
    first_row = [r for r in seeded.rows if r["trade_date"] == today][:1]
    seeded.write(first_row)
    snapshot = seeded.table.open()
    assert snapshot is not None
    snapshot.optimize.compact(partition_filters=[("trade_date", "=", today.isoformat())])
    again = run_scheduled_checks(seeded, instance)
    duplicates = again["no_duplicate_kafka_records"]
    assert not duplicates.passed and duplicates.metadata["failing_rows"].value == 1
    assert duplicates.metadata["sample"].value[0]["kafka_offset"] == first_row[0]["kafka_offset"]
    # the rows read: those whose Kafka coordinates lie in the ranges of what arrived since
    # the last pass (the failed batch and the repeat), both copies of the repeat included
    new = bad + first_row
    ranges = {
        p: (min(offsets), max(offsets))
        for p in {r["kafka_partition"] for r in new}
        if (offsets := [r["kafka_offset"] for r in new if r["kafka_partition"] == p])
    }
    in_ranges = [
        r
        for r in seeded.rows
        if r["kafka_partition"] in ranges
        and ranges[r["kafka_partition"]][0] <= r["kafka_offset"] <= ranges[r["kafka_partition"]][1]
    ]
    assert again["no_null_keys"].metadata["rows_checked"].value == len(in_ranges)
    assert len(in_ranges) < len(seeded.rows)  # bounded: not the whole day


def produce_new_records(seeded: SeededLake, before: dict[int, int], extra: int = 0) -> None:
    """Kafka records for the offsets the lake got since ``before`` (and ``extra`` more in
    partition 0 that the lake lacks), with record times outside the in-flight window."""
    producer = Producer({"bootstrap.servers": seeded.settings.kafka_server, "acks": "all"})
    old = int((dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).timestamp() * 1000)
    counts = {p: n - before.get(p, 0) for p, n in seeded.next_offset.items()}
    counts[0] = counts.get(0, 0) + extra
    for partition, count in counts.items():
        for _ in range(count):
            producer.produce(seeded.settings.kafka_topic, b"{}", partition=partition, timestamp=old)
    assert producer.flush(30) == 0


def test_the_reconciliation_counts_from_where_it_last_found_everything(
    seeded: SeededLake, instance: DagsterInstance
) -> None:
    from finpipe_dagster.partitions import today_utc

    services.ensure_topics(seeded.settings, [seeded.settings.kafka_topic])
    today = today_utc()
    seeded.write(seeded.trades(today, 40, seed=21))
    produce_new_records(seeded, {})
    first = run_scheduled_checks(seeded, instance)["reconciles_with_kafka"]
    assert first.passed
    ranges = first.metadata["partitions"].value
    assert {p: (r["from"], r["kafka"]) for p, r in ranges.items()} == {
        p: (0, seeded.next_offset.get(int(p), 0)) for p in ranges
    }

    before = dict(seeded.next_offset)
    seeded.write(seeded.trades(today, 20, seed=22))
    produce_new_records(seeded, before)
    second = run_scheduled_checks(seeded, instance)["reconciles_with_kafka"]
    assert second.passed
    ranges = second.metadata["partitions"].value
    assert {p: (r["from"], r["to"]) for p, r in ranges.items()} == {
        p: (before.get(int(p), 0), seeded.next_offset.get(int(p), 0)) for p in ranges
    }

    # two records the lake never got: found missing, and again by the next run (the record
    # of what was found does not move past a gap)
    produce_new_records(seeded, dict(seeded.next_offset), extra=2)
    for _ in range(2):
        gap = run_scheduled_checks(seeded, instance)["reconciles_with_kafka"]
        assert not gap.passed
        assert gap.metadata["failing_rows"].value == 2
        assert gap.metadata["partitions"].value["0"]["from"] == seeded.next_offset[0]

    # a run for named days counts Kafka's whole retained range
    full = run_checks(seeded, instance)["reconciles_with_kafka"]
    assert full.metadata["partitions"].value["0"]["from"] == 0
    assert full.metadata["failing_rows"].value == 2
