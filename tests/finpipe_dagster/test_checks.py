"""Quality checks of processed_trades on a seeded lake and a real Kafka topic."""

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Producer
from dagster import AssetSelection, Definitions, define_asset_job

from finpipe import contracts, lake
from finpipe.settings import load_settings
from finpipe_dagster.lake.assets import PROCESSED_TRADES, processed_trades_spec
from finpipe_dagster.lake.checks import processed_trades_quality
from infra import services

from .conftest import DAY, SeededLake


def run_checks(seeded: SeededLake) -> dict[str, object]:
    defs = Definitions(
        assets=[processed_trades_spec(load_settings())],
        asset_checks=[processed_trades_quality],
        jobs=[define_asset_job("checks", AssetSelection.checks_for_assets(PROCESSED_TRADES))],
        resources=seeded.resources,
    )
    result = defs.resolve_job_def("checks").execute_in_process(
        run_config={"ops": {"processed_trades_quality": {"config": {"days": [DAY.isoformat()]}}}},
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
    """A rejects object as the Spark job writes it, processed at noon of ``processed``."""
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
            }
            for p, o, reason in rows
        ],
        schema=contracts.REJECTS_SCHEMA,
    )
    settings = seeded.settings
    name = contracts.batch_file_name(seeded.next_batch)
    path = f"{settings.s3_bucket}/{settings.lake_prefix}/{contracts.LAKE_REJECTS_DIR}/{name}"
    pq.write_table(table, path, filesystem=lake.s3_filesystem(settings))
    seeded.next_batch += 1


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
    without_trade_value = pa.schema([f for f in contracts.LAKE_SCHEMA if f.name != "trade_value"])
    seeded.write(seeded.trades(DAY, 1, seed=9), schema=without_trade_value)
    write_rejects(seeded, [(0, 41, "not JSON: truncated"), (1, 7, "out of range: price -1")])
    write_rejects(seeded, [(0, 5, "out of range: old")], processed=DAY - dt.timedelta(days=2))

    evaluations = run_checks(seeded)
    failed = {n for n, e in evaluations.items() if not e.passed}
    assert failed == {
        "schema_matches_contract",
        "price_positive",
        "no_duplicate_kafka_records",
        "trade_value_is_price_times_volume",  # the file without the column reads as NULL
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
    schema = evaluations["schema_matches_contract"].metadata["bad_files"].value
    assert len(schema) == 1
    assert "missing ['trade_value']" in next(iter(schema.values()))
    price = evaluations["price_positive"].metadata
    assert price["failing_rows"].value == 1
    assert price["sample"].value[0]["price"] == -1.5
    duplicates = evaluations["no_duplicate_kafka_records"].metadata
    assert duplicates["failing_rows"].value == 1
    assert duplicates["sample"].value[0]["kafka_offset"] == good[0]["kafka_offset"]
    assert evaluations["no_null_keys"].passed


def run_scheduled_checks(seeded: SeededLake) -> dict[str, object]:
    """The scheduled run: no ``days``, so yesterday and today, bounded by what passed."""
    defs = Definitions(
        assets=[processed_trades_spec(load_settings())],
        asset_checks=[processed_trades_quality],
        jobs=[define_asset_job("checks", AssetSelection.checks_for_assets(PROCESSED_TRADES))],
        resources=seeded.resources,
    )
    result = defs.resolve_job_def("checks").execute_in_process(raise_on_error=False)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_scheduled_checks_read_only_what_arrived_since_they_last_passed(
    seeded: SeededLake,
) -> None:
    from finpipe_dagster.partitions import today_utc

    services.ensure_topics(seeded.settings, [seeded.settings.kafka_topic])
    today = today_utc()
    yesterday = today - dt.timedelta(days=1)
    seeded.write(seeded.trades(yesterday, 30, seed=11))
    seeded.write(seeded.trades(today, 50, seed=12))
    first = run_scheduled_checks(seeded)
    assert first["no_null_keys"].passed
    assert first["no_null_keys"].metadata["rows_checked"].value == 80  # both days in full

    seeded.write(seeded.trades(today, 20, seed=13))
    second = run_scheduled_checks(seeded)
    assert second["no_null_keys"].metadata["rows_checked"].value == 20  # only the new batch
    assert second["no_null_keys"].metadata["checked_spans"].value == {
        today.isoformat(): "new objects"
    }

    bad = seeded.trades(today, 5, seed=14)
    bad[0]["price"] = -1.0
    seeded.write(bad)
    for _ in range(2):  # a failure stays failing: its rows are read again
        failing = run_scheduled_checks(seeded)
        assert not failing["price_positive"].passed
        assert failing["price_positive"].metadata["failing_rows"].value == 1

    # a record written twice (a later batch repeats an offset already checked): the day
    # is read in full, so both copies are in view
    seeded.write([r for r in seeded.rows if r["trade_date"] == today][:1])
    again = run_scheduled_checks(seeded)
    assert not again["no_duplicate_kafka_records"].passed
    assert again["no_null_keys"].metadata["rows_checked"].value == 76


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
    seeded: SeededLake,
) -> None:
    from finpipe_dagster.partitions import today_utc

    services.ensure_topics(seeded.settings, [seeded.settings.kafka_topic])
    today = today_utc()
    seeded.write(seeded.trades(today, 40, seed=21))
    produce_new_records(seeded, {})
    first = run_scheduled_checks(seeded)["reconciles_with_kafka"]
    assert first.passed
    ranges = first.metadata["partitions"].value
    assert {p: (r["from"], r["kafka"]) for p, r in ranges.items()} == {
        p: (0, seeded.next_offset.get(int(p), 0)) for p in ranges
    }

    before = dict(seeded.next_offset)
    seeded.write(seeded.trades(today, 20, seed=22))
    produce_new_records(seeded, before)
    second = run_scheduled_checks(seeded)["reconciles_with_kafka"]
    assert second.passed
    ranges = second.metadata["partitions"].value
    assert {p: (r["from"], r["to"]) for p, r in ranges.items()} == {
        p: (before.get(int(p), 0), seeded.next_offset.get(int(p), 0)) for p in ranges
    }

    # two records the lake never got: found missing, and again by the next run (the record
    # of what was found does not move past a gap)
    produce_new_records(seeded, dict(seeded.next_offset), extra=2)
    for _ in range(2):
        gap = run_scheduled_checks(seeded)["reconciles_with_kafka"]
        assert not gap.passed
        assert gap.metadata["failing_rows"].value == 2
        assert gap.metadata["partitions"].value["0"]["from"] == seeded.next_offset[0]

    # a run for named days counts Kafka's whole retained range
    full = run_checks(seeded)["reconciles_with_kafka"]
    assert full.metadata["partitions"].value["0"]["from"] == 0
    assert full.metadata["failing_rows"].value == 2
