"""The lake sensor and the alerts sensor over a temporary instance and the real MinIO."""

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    SensorResult,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from finpipe.settings import load_settings
from finpipe_dagster.alerts.sensors import build_alerts_sensor
from finpipe_dagster.definitions import build_resources
from finpipe_dagster.lake.assets import PROCESSED_TRADES
from finpipe_dagster.lake.sensors import batch_materialization, build_processed_trades_sensor
from finpipe_dagster.partitions import today_utc
from finpipe_dagster.resources import FinpipeSettings

from .conftest import SeededLake

alerts_sensor = build_alerts_sensor(load_settings())
processed_trades_sensor = build_processed_trades_sensor(load_settings())


class Receiver:
    """A Slack-like webhook on loopback that records every JSON body."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.server.shutdown()


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


def lake_tick(instance: DagsterInstance, seeded: SeededLake, cursor: str | None) -> SensorResult:
    with build_sensor_context(
        instance=instance, cursor=cursor, resources=seeded.resources
    ) as context:
        result = processed_trades_sensor(context)
    assert isinstance(result, SensorResult)
    for event in result.asset_events:  # what the daemon does with a sensor's events
        instance.report_runless_asset_event(event)
    return result


def lake_events(result: SensorResult) -> list[AssetMaterialization]:
    return [e for e in result.asset_events if isinstance(e, AssetMaterialization)]


def test_lake_sensor_records_each_new_table_version_once(
    instance: DagsterInstance, seeded: SeededLake
) -> None:
    version = seeded.write(seeded.trades(today_utc(), 30, seed=40))
    first = lake_tick(instance, seeded, None)
    [event] = lake_events(first)
    assert event.asset_key == PROCESSED_TRADES
    assert event.tags[DATA_VERSION_TAG] == str(version)
    assert event.metadata["table_version"].value == version
    assert event.metadata["rows_added"].value == 30
    assert event.metadata["files_added"].value == len({r["symbol"] for r in seeded.rows})
    newest = max(r["trade_ts"] for r in seeded.rows).timestamp()
    assert event.metadata["max_trade_ts"].value == newest
    assert "commit_time" in event.metadata
    assert lake_events(lake_tick(instance, seeded, first.cursor)) == []
    recorded = instance.get_latest_materialization_event(PROCESSED_TRADES)
    assert recorded is not None and recorded.asset_materialization is not None
    assert recorded.asset_materialization.tags[DATA_VERSION_TAG] == str(version)

    # Two batches since: one event, of the newest version, counting both. Then a
    # compaction: a new version holding no new rows, which records nothing (the lake must
    # look stale when only maintenance commits).
    seeded.write(seeded.trades(today_utc(), 5, seed=43))
    version = seeded.write(seeded.trades(today_utc(), 7, seed=44))
    second = lake_tick(instance, seeded, first.cursor)
    [event] = lake_events(second)
    assert event.metadata["rows_added"].value == 12
    assert event.metadata["since_version"].value == version - 2
    assert event.tags[DATA_VERSION_TAG] == str(version)
    snapshot = seeded.table.open()
    assert snapshot is not None
    assert snapshot.optimize.compact()["numFilesRemoved"] > 0
    assert lake_events(lake_tick(instance, seeded, second.cursor)) == []


def test_the_spark_heartbeat_fields_ride_on_the_lake_event(
    instance: DagsterInstance, seeded: SeededLake
) -> None:
    from finpipe import health

    version = seeded.write(seeded.trades(today_utc(), 10, seed=45))
    beat = {
        "stream": health.SPARK,
        health.HEARTBEAT_KEY: time.time(),
        "batch_id": 7,
        "rows": 10,
        "rejects": 1,
        "table_version": version,
    }
    health.write_json_atomic(health.health_path(seeded.settings, health.SPARK), beat)
    [event] = lake_events(lake_tick(instance, seeded, None))
    assert event.metadata["batch_id"].value == 7
    assert event.metadata["heartbeat_table_version"].value == version
    assert event.metadata["rejects"].value == 1
    assert event.metadata["rows_added"].value == 10


def test_stale_lake_alerts_once_then_recovers_once(
    instance: DagsterInstance,
    seeded: SeededLake,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)

    def windows(warn: int, fail: int) -> dict[str, Any]:
        return build_resources(
            FinpipeSettings(
                **seeded.resource.model_dump(
                    exclude={"freshness_warn_seconds", "freshness_fail_seconds"}
                ),
                freshness_warn_seconds=warn,
                freshness_fail_seconds=fail,
            )
        )

    # Stale is first judged with a 2 s fail window, the recovery with a 16 s one: a tick on
    # a loaded machine may take seconds, which must not make just-written data look stale
    # (the data before is older than 16 s by then, so the window still tells them apart).
    short, mid, long = windows(1, 2), windows(8, 16), windows(3_600, 7_200)
    alert_cursor: list[str | None] = [None]

    def alert_tick(resources: dict[str, Any]) -> str:
        with build_sensor_context(
            instance=instance, cursor=alert_cursor[0], resources=resources
        ) as context:
            skip = alerts_sensor(context)
            alert_cursor[0] = context.cursor
        return skip.skip_message  # type: ignore[union-attr]

    seeded.write(seeded.trades(today_utc(), 10, seed=41))
    lake_cursor = lake_tick(instance, seeded, None).cursor
    first_update = time.monotonic()
    assert "no change" in alert_tick(long)  # fresh
    time.sleep(2.5)  # the feed stopped: nothing new lands
    assert "opened lake_stale" in alert_tick(short)
    assert "no change" in alert_tick(short)  # still stale: no second alert
    assert len(receiver.received) == 1
    assert "processed_trades is stale" in receiver.received[0]["text"]

    time.sleep(max(0.0, first_update + 17 - time.monotonic()))
    assert "no change" in alert_tick(mid)  # stale by the 16 s window too: still open
    seeded.write(seeded.trades(today_utc(), 10, seed=42))  # the feed resumed
    lake_tick(instance, seeded, lake_cursor)
    assert "closed lake_stale" in alert_tick(mid)
    assert "no change" in alert_tick(mid)
    assert len(receiver.received) == 2
    assert "recovered" in receiver.received[1]["text"]


def test_refresh_sensor_requests_today_once_per_lake_update(instance: DagsterInstance) -> None:
    from dagster import RunRequest, SkipReason

    from finpipe_dagster.summaries.sensors import build_summaries_refresh_sensor

    summaries_refresh_sensor = build_summaries_refresh_sensor(load_settings())

    def tick(cursor: str | None) -> tuple[RunRequest | SkipReason, str | None]:
        with build_sensor_context(instance=instance, cursor=cursor) as context:
            result = summaries_refresh_sensor(context)
            return result, context.cursor

    result, cursor = tick(None)
    assert isinstance(result, SkipReason) and "no recorded update" in str(result.skip_message)

    instance.report_runless_asset_event(AssetMaterialization(asset_key=PROCESSED_TRADES))
    first, cursor = tick(cursor)
    assert isinstance(first, RunRequest)
    assert first.partition_key == today_utc().isoformat()

    result, cursor = tick(cursor)
    assert isinstance(result, SkipReason) and "no new lake data" in str(result.skip_message)

    instance.report_runless_asset_event(AssetMaterialization(asset_key=PROCESSED_TRADES))
    second, _ = tick(cursor)
    assert isinstance(second, RunRequest) and second.run_key != first.run_key


def test_a_batch_materialization_counts_its_rejects() -> None:
    beat = {"batch_id": 12, "rows": 40, "rejects": 3, "total_rejects": 9, "total_rows": 400}
    event = batch_materialization(beat, now=time.time())
    assert event.metadata["rejects"].value == 3
    assert event.metadata["total_rejects_since_start"].value == 9
    quiet = batch_materialization({"batch_id": 13, "rows": 5}, now=time.time())
    assert quiet.metadata["rejects"].value == 0
    versioned = batch_materialization({"batch_id": 14, "table_version": 31}, now=time.time())
    assert versioned.tags[DATA_VERSION_TAG] == "31"


def test_an_old_producer_backlog_alerts_once_then_recovers_once(
    instance: DagsterInstance,
    seeded: SeededLake,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from finpipe import health

    monkeypatch.setenv("ALERT_WEBHOOK_URL", receiver.url)
    resources = build_resources(seeded.resource)
    settings = seeded.resource.load()
    cursor: list[str | None] = [None]

    def alert_tick() -> str:
        with build_sensor_context(instance=instance, cursor=cursor[0], resources=resources) as ctx:
            skip = alerts_sensor(ctx)
            cursor[0] = ctx.cursor
        return skip.skip_message  # type: ignore[union-attr]

    def producer_beat(**fields: Any) -> None:
        beat = {"stream": "producer", "pid": 1, health.HEARTBEAT_KEY: time.time()}
        health.write_json_atomic(health.health_path(settings, "producer"), beat | fields)

    limit = settings.producer_backlog_alert_seconds
    producer_beat(backlog_records=5, oldest_undelivered_age_s=0.3, kafka_state="connected")
    assert "no change" in alert_tick()
    producer_beat(backlog_records=9000, oldest_undelivered_age_s=limit + 1, kafka_state="down")
    assert "opened producer_backlog" in alert_tick()
    assert "no change" in alert_tick()
    producer_beat(backlog_records=0, oldest_undelivered_age_s=None, kafka_state="connected")
    assert "closed producer_backlog" in alert_tick()
    texts = [m["text"] for m in receiver.received]
    assert len(texts) == 2 and "PRODUCER_BACKLOG_ALERT_SECONDS" in texts[0]
    assert "recovered" in texts[1]
    health.health_path(settings, "producer").unlink()
