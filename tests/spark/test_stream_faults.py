"""``finpipe-spark`` against what a production lake meets, with real Kafka, MinIO and Spark:
foreign records on the topic, a checkpoint older than the lake, an object-store outage,
and a network that must not reach the driver's UI. Each reconciles by Kafka coordinates.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetCheckKey, AssetSelection, Definitions, define_asset_job

from finpipe import lake
from finpipe.contracts import TradeRecord
from finpipe.settings import Settings
from finpipe_dagster.definitions import build_resources
from finpipe_dagster.lake.assets import PROCESSED_TRADES, processed_trades_spec
from finpipe_dagster.lake.checks import processed_trades_quality
from finpipe_dagster.lake.sensors import batch_materialization
from finpipe_dagster.resources import FinpipeSettings
from infra import services
from tests.spark.spark_job_harness import (
    SparkJobEnv,
    TradeFeed,
    dumps,
    encode,
    foreign_records,
    heartbeat_offsets,
    produce,
)

pytestmark = pytest.mark.timeout(600)


def _running(beat: dict[str, Any]) -> bool:
    return beat.get("status") == "running"


def _trade(i: int, now_ms: int) -> TradeRecord:
    symbol = ("AAPL", "BINANCE:BTCUSDT", "BRK.B")[i % 3]
    return TradeRecord(symbol, 100.0 + i, float(i % 4), now_ms - i, None, now_ms, "simulator")


def _rejects(settings: Settings) -> list[dict[str, Any]]:
    return lake.rejects_dataset(settings).to_table().to_pylist()


def _rejects_check(settings: Settings) -> Any:
    """Dagster's `no_new_rejects` check, run as the schedule runs it, over today."""
    resource = FinpipeSettings(
        kafka_topic=settings.kafka_topic,
        lake_prefix=settings.lake_prefix,
        finpipe_home=str(settings.home),
    )
    check = AssetCheckKey(PROCESSED_TRADES, "no_new_rejects")
    defs = Definitions(
        assets=[processed_trades_spec(settings)],
        asset_checks=[processed_trades_quality],
        jobs=[define_asset_job("rejects", AssetSelection.checks(check))],
        resources=build_resources(resource),
    )
    today = dt.datetime.now(dt.UTC).date().isoformat()
    result = defs.resolve_job_def("rejects").execute_in_process(
        run_config={"ops": {"processed_trades_quality": {"config": {"days": [today]}}}},
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_foreign_records_become_rejects_and_the_stream_keeps_running(
    job_env: SparkJobEnv,
) -> None:
    """The eight kinds of foreign record of the field, and more, between valid trades."""
    settings = job_env.settings
    job = job_env.start()
    job_env.wait_health(job, _running)
    now = int(time.time() * 1000)
    kinds = foreign_records(now)
    values: list[tuple[str, bytes]] = []
    for i, raw in enumerate(kinds.values()):
        values += [(_trade(i, now).symbol, encode(_trade(i, now))), ("foreign", raw)]
    coords = produce(job_env, values)
    valid = set(coords[0::2])
    foreign = dict(zip(coords[1::2], kinds, strict=True))
    beat = job_env.wait_health(
        job, lambda h: h.get("total_rows", 0) + h.get("total_rejects", 0) >= len(coords)
    )
    assert (beat["total_rows"], beat["total_rejects"]) == (len(valid), len(foreign)), dumps(beat)
    # A valid trade after them still flows: the stream did not stop on them.
    last = produce(job_env, [("AAPL", encode(_trade(99, int(time.time() * 1000))))])
    beat = job_env.wait_health(job, lambda h: h.get("total_rows", 0) > len(valid))
    assert beat["status"] == "running" and job.poll() is None, dumps(beat)

    rows = job_env.lake_rows()
    assert len(rows) == len(set(rows)), "a trade is in the lake twice"
    assert set(rows) == valid | set(last)
    rejects = _rejects(settings)
    by_coords = {(r["kafka_partition"], r["kafka_offset"]): r for r in rejects}
    assert len(rejects) == len(by_coords) == len(foreign)
    assert set(by_coords) == set(foreign)
    for where, kind in foreign.items():
        reject = by_coords[where]
        assert reject["reason"], kind
        assert reject["value"] == kinds[kind].decode("utf-8", errors="replace"), kind
    reasons = {kind: by_coords[where]["reason"] for where, kind in foreign.items()}
    assert "ahead of the clock" in reasons["timestamp in microseconds"]
    assert "64-bit" in reasons["integer above int64"]
    assert "symbol is empty" in reasons["empty symbol"]
    assert reasons["not JSON"].startswith("not JSON")

    # What Dagster shows: the count on the lake asset's materialization, a failed check.
    event = batch_materialization(job_env.health(), now=time.time())
    assert event.metadata["total_rejects_since_start"].value == len(foreign)
    evaluation = _rejects_check(settings)
    assert not evaluation.passed and evaluation.severity.value == "ERROR"
    assert evaluation.metadata["failing_rows"].value == len(foreign)
    print(f"valid {len(valid) + 1}, foreign {len(foreign)}: {sorted(reasons.items())}")
    assert job_env.terminate(job) == 0, job_env.log_tail()


def _lake_objects(settings: Settings) -> dict[str, tuple[str, int, Any]]:
    """Every object under the table's prefix: key -> (ETag, size, last modified)."""
    client = lake.s3_client(settings)
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=settings.s3_bucket, Prefix=f"{settings.lake_prefix}/"
    )
    return {
        item["Key"]: (item["ETag"], item["Size"], item["LastModified"])
        for page in pages
        for item in page.get("Contents", [])
    }


def test_a_checkpoint_older_than_the_lake_is_refused_and_the_lake_is_untouched(
    job_env: SparkJobEnv, tmp_path: Path
) -> None:
    """An older copy of the checkpoint would number new batches with ids the lake holds."""
    settings = job_env.settings
    checkpoint = settings.checkpoint_dir
    job = job_env.start()
    job_env.wait_health(job, _running)
    now = int(time.time() * 1000)
    produce(job_env, [("AAPL", encode(_trade(i, now))) for i in range(6)])
    job_env.wait_health(job, lambda h: h.get("total_rows", 0) >= 6)
    backup = tmp_path / "checkpoint-backup"  # a copy taken while the job runs
    shutil.copytree(checkpoint, backup, ignore=shutil.ignore_patterns(".*", "*.tmp"))
    produce(job_env, [("AAPL", encode(_trade(i, now))) for i in range(6, 12)])
    beat = job_env.wait_health(job, lambda h: h.get("total_rows", 0) >= 12)
    assert job_env.terminate(job) == 0, job_env.log_tail()
    lake_before = _lake_objects(settings)
    rows_before = job_env.lake_rows()
    assert len(rows_before) == 12 and job_env.lake_committed_batch() == beat["batch_id"]

    shutil.rmtree(checkpoint)
    shutil.copytree(backup, checkpoint)
    job = job_env.start()
    assert job.wait(timeout=120) == 2, job_env.log_tail()
    refused = job_env.health()
    assert refused["status"] == "refused", dumps(refused)
    for words in (
        f"has committed batch {beat['batch_id']}",
        "older than the lake",
        "SPARK_CHECKPOINT_DIR",
        "LAKE_PREFIX",
        "docs/operations.md",
    ):
        assert words in refused["error"], refused["error"]
    assert "spark_query_started" not in job_env.log_tail(200)
    assert _lake_objects(settings) == lake_before
    assert job_env.lake_rows() == rows_before


def _non_loopback_addresses() -> list[str]:
    """This machine's addresses other than loopback (and link-local, which needs a scope)."""
    try:
        words = subprocess.run(
            ["hostname", "-I"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        words = []
    return [w for w in words if not w.startswith(("127.", "::1", "fe80:"))]


def test_the_spark_ui_listens_on_loopback_only_with_kill_links_off(
    job_env: SparkJobEnv,
) -> None:
    job = job_env.start()
    beat = job_env.wait_health(job, lambda h: _running(h) and h.get("spark_ui_url"))
    url = urllib.parse.urlsplit(beat["spark_ui_url"])
    assert url.hostname == "127.0.0.1", beat["spark_ui_url"]
    port = url.port
    assert port is not None
    # The UI's first REST call loads its JAX-RS stack: tens of seconds on two busy cores.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/applications", timeout=120) as r:
        (app,) = json.load(r)
    env_url = f"http://127.0.0.1:{port}/api/v1/applications/{app['id']}/environment"
    with urllib.request.urlopen(env_url, timeout=60) as r:
        properties = dict(json.load(r)["sparkProperties"])
    assert properties["spark.ui.killEnabled"] == "false"
    assert properties["spark.ui.port"] == str(job_env.settings.spark_ui_port)
    addresses = _non_loopback_addresses()
    # A machine without one cannot show the refusal: fail, never pass by skipping.
    assert addresses, "no non-loopback address on this machine to test the refusal from"
    for address in addresses:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, port), timeout=10).close()
    print(f"Spark UI on 127.0.0.1:{port}; refused on {addresses}")
    assert job_env.terminate(job) == 0, job_env.log_tail()


OUTAGE_SECONDS = 120


@pytest.mark.e2e
def test_an_object_store_outage_is_ridden_out_inside_the_batch(
    job_env: SparkJobEnv, infrastructure: Settings
) -> None:
    """MinIO stops for two minutes while trades flow; S3_WRITE_RETRY_SECONDS at its
    default. The stream resumes by itself; the lake reconciles exactly with Kafka."""
    settings = job_env.settings
    assert settings.s3_write_retry_seconds > OUTAGE_SECONDS  # the default covers it
    minio = services.minio_process(infrastructure)
    job = job_env.start()
    job_env.wait_health(job, _running)
    try:
        with TradeFeed(settings, ["AAPL", "BINANCE:BTCUSDT", "BRK.B"]) as feed:
            job_env.wait_health(job, lambda h: h.get("total_rows", 0) > 0)
            assert minio.stop()
            stopped = time.monotonic()
            while time.monotonic() - stopped < OUTAGE_SECONDS:
                assert job.poll() is None, job_env.log_tail()
                time.sleep(2)
            minio.start()
            during = job_env.health()
            job_env.wait_health(job, lambda h: h.get("batch_id", -1) > during.get("batch_id", -1))
            feed.stop()
            assert not feed.failures, feed.failures
            ends = feed.end_offsets()
            job_env.wait_health(
                job, lambda h: heartbeat_offsets(h, settings.kafka_topic) == ends, timeout=300
            )
    finally:
        if not services.minio_ready(infrastructure):
            minio.start()
    rows = job_env.lake_rows()
    assert len(rows) == len(set(rows)), "a trade is in the lake twice"
    assert set(rows) == feed.delivered, (
        f"lost {len(feed.delivered - set(rows))}, extra {len(set(rows) - feed.delivered)}"
    )
    retries = job_env.log_tail(100_000).count("object_store_write_retry")
    assert retries > 0, "the outage never reached a write: the drill proved nothing"
    assert job.poll() is None and job_env.health()["status"] == "running"
    print(f"trades {len(rows)}, write retries logged {retries}")
    assert job_env.terminate(job) == 0, job_env.log_tail()
