"""The lost-drive drill on an erasure-coded MinIO: four drive folders in one process
(``MINIO_DRIVES=4``, started by the code `make up` runs), the lake and the summaries on
it; mid-run one drive folder is replaced by a blank one, as a failed disk is.

The module runs ``finpipe-spark`` as a process of its own, writing a stream of trades
from the test broker into a lake on this MinIO, while threads of the test publish the
summaries of the day from the lake every few seconds (the SQL and the publish of the
Dagster assets) and read them back, and PUT and GET a small object every fifth of a
second, timing each PUT. Then:

1. no write or read failed, before, during or after the loss, and Spark kept committing
   in one process;
2. the lake holds exactly the trades Kafka acknowledged (by Kafka coordinates: 0
   missing, 0 doubled), the summaries count every one of them, and every probe object
   reads back as written;
3. MinIO healed the blank drive by itself (its fresh-drive monitor; no ``mc admin
   heal``): it holds every object the others hold.

The PUT latency before the loss, while the drive is blank or healing, and after is
printed (not judged: it is the machine's). Nothing is shortened: MinIO's heal runs at its
own pace and the Spark job at its default trigger.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from finpipe import lake, summaries
from finpipe.settings import Settings, load_settings
from finpipe_dagster.summaries import sql
from infra import services
from infra.processes import ManagedProcess, tail
from tests.spark.spark_job_harness import TradeFeed
from tests.support.platform import beat
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.drill, pytest.mark.timeout(900)]

DRIVES = 4
LOST = 2  # the drive folder replaced by a blank one
STEADY_SECONDS = 20.0  # before the loss, and after the heal
SYMBOLS = ["BINANCE:BTCUSDT", "AAPL", "BRK.B"]
PROBE_BYTES = 256 * 1024
BIN = Path(sys.executable).parent


class Loop:
    """A thread of the test running ``run`` until stopped."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, name=type(self).__name__, daemon=True)

    def run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join(60)


class Probe(Loop):
    """PUT (timed) and GET every fifth of a second; what it wrote, and what failed."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.written: dict[str, str] = {}  # key -> sha256
        self.puts: list[tuple[float, float]] = []  # (time, seconds)
        self.failures: list[str] = []

    def run(self) -> None:
        client = lake.s3_client(self.settings)
        bucket = self.settings.s3_bucket
        n = 0
        while not self.done.wait(0.2):
            body = os.urandom(PROBE_BYTES)
            key = f"probe/{n:06d}"
            n += 1
            try:
                started = time.monotonic()
                client.put_object(Bucket=bucket, Key=key, Body=body)
                self.puts.append((started, time.monotonic() - started))
                self.written[key] = hashlib.sha256(body).hexdigest()
                back = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                if back != body:
                    self.failures.append(f"GET {key}: other bytes than written")
            except Exception as exc:
                self.failures.append(f"{key}: {exc}")


class SummaryLoop(Loop):
    """Publishes today's summaries from the lake and reads them back, every few seconds."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.publishes = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.done.wait(3.0):
            try:
                self.publish_once()
            except Exception as exc:
                self.failures.append(repr(exc))

    def publish_once(self) -> int:
        """Publish the day's summaries once; returns how many trades they count."""
        day = dt.datetime.now(dt.UTC).date()
        snapshot = lake.trades_table(self.settings).open()
        if snapshot is None:
            return 0
        con = lake.duckdb_with_lake(self.settings)
        built = {
            summaries.DAILY_SYMBOL_STATS: sql.daily_symbol_stats(con, day),
            summaries.OHLCV_1M: sql.ohlcv_1m(con, day),
        }
        rows = sum(built[summaries.DAILY_SYMBOL_STATS]["trade_count"].to_pylist())
        source = summaries.LakeState(self.settings.lake_uri, snapshot.version(), rows)
        for name, table in built.items():
            summaries.publish(self.settings, name, day, table, source=source)
            back = summaries.read(self.settings, name, [day])
            if back.num_rows != table.num_rows:
                self.failures.append(f"{name}: read {back.num_rows} of {table.num_rows} rows")
        self.publishes += 1
        return rows


def drive_objects(drive: Path, bucket: str) -> set[str]:
    """The objects of the bucket that have their part on this drive (each object is a
    folder holding ``xl.meta``)."""
    root = drive / bucket
    return {str(meta.parent.relative_to(root)) for meta in root.rglob("xl.meta")}


def percentiles(latencies: list[float]) -> dict[str, float]:
    if len(latencies) < 2:
        return {"n": len(latencies)}
    cuts = statistics.quantiles(latencies, n=20, method="inclusive")
    return {
        "n": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(cuts[18] * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
    }


@dataclass
class DriveDrill:
    settings: Settings
    spark: ManagedProcess
    feed: TradeFeed
    probe: Probe
    loop: SummaryLoop
    marks: dict[str, float] = field(default_factory=dict)
    spark_pids: set[int] = field(default_factory=set)
    batches: list[tuple[float, int, int]] = field(default_factory=list)  # (t, id, ms)
    figures: dict[str, Any] = field(default_factory=dict)


def minio_env(infrastructure: Settings, work: Path) -> dict[str, str]:
    """Its own MinIO on the ports after the session's (a slot's ports up to +99 are its
    own), its own lake and home; the session's broker."""
    run = uuid.uuid4().hex[:8]
    _, port = services.s3_endpoint(infrastructure)
    return {
        "FINPIPE_HOME": str(work / "home"),
        "MINIO_DRIVES": str(DRIVES),
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{port + 2}",
        "MINIO_CONSOLE_PORT": str(port + 3),
        "KAFKA_TOPIC": f"drives-{run}",
        "LAKE_PREFIX": f"drives-{run}/processed_trades",
        "SUMMARIES_PREFIX": f"drives-{run}/summaries",
        "SPARK_CHECKPOINT_DIR": str(work / "checkpoint"),
        "SPARK_METRICS_PORT": "0",
    }


@pytest.fixture(scope="module")
def drill(
    infrastructure: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DriveDrill]:
    started = time.monotonic()
    work = tmp_path_factory.mktemp("drives")
    env = minio_env(infrastructure, work)
    settings = load_settings(**env)
    minio = services.minio_process(settings)
    spark = ManagedProcess(
        name="spark", argv=[str(BIN / "finpipe-spark")], home=settings.home, env=env
    )
    services.ensure_topics(settings, [settings.kafka_topic])
    feed = TradeFeed(settings, SYMBOLS, per_tick=5)
    seen = DriveDrill(settings, spark, feed, Probe(settings), SummaryLoop(settings))
    try:
        services.start_minio(settings)
        services.ensure_bucket(settings)
        spark.start()
        with seen.feed:
            seen.probe.start()
            seen.loop.start()
            _lose_a_drive(seen)
        seen.figures["drill_s"] = round(time.monotonic() - started)
        yield seen
    finally:
        seen.probe.stop()
        seen.loop.stop()
        spark.stop()
        minio.stop()


def _note_spark(seen: DriveDrill) -> dict[str, Any] | None:
    """Record Spark's process and batches; fail at once, with its log, when it exited."""
    assert seen.spark.pid() is not None, f"spark exited:\n{tail(seen.spark.log_file, 40)}"
    found = beat(seen.settings, "spark")
    if found:
        seen.spark_pids.add(int(found["pid"]))
        batch_id = found.get("batch_id")
        if batch_id is not None and (not seen.batches or seen.batches[-1][1] != batch_id):
            duration = int(found.get("batch_duration_ms") or 0)
            seen.batches.append((time.monotonic(), int(batch_id), duration))
    return found


def _lose_a_drive(seen: DriveDrill) -> None:
    settings = seen.settings
    drives = services.minio_drives(settings)
    lost, healthy = drives[LOST - 1], drives[0]
    wait_for(
        "a Spark batch with rows",
        lambda: (b := _note_spark(seen)) and b.get("total_rows"),
        300,
    )
    seen.marks["steady"] = time.monotonic()  # the comparison's "before": Spark is up
    _watch(seen, STEADY_SECONDS)
    before = drive_objects(healthy, settings.s3_bucket)
    # A failed disk swapped for a blank one: the folder MinIO uses is empty from now on.
    lost.rename(lost.with_name(lost.name + ".lost"))
    lost.mkdir()
    seen.marks["wipe"] = wiped = time.monotonic()
    shutil.rmtree(lost.with_name(lost.name + ".lost"))

    def healed() -> bool:
        _note_spark(seen)
        formatted = (lost / ".minio.sys" / "format.json").exists()
        return formatted and before <= drive_objects(lost, settings.s3_bucket)

    wait_for("MinIO to heal the blank drive", healed, 300, every=1)
    seen.marks["healed"] = time.monotonic()
    seen.figures.update(objects_before_loss=len(before), heal_s=round(time.monotonic() - wiped, 1))
    _watch(seen, STEADY_SECONDS)
    seen.marks["end"] = time.monotonic()
    seen.feed.stop()
    expected = seen.feed.end_offsets()

    def caught_up() -> bool:
        found = _note_spark(seen)
        committed = (found or {}).get("end_offsets", {}).get(settings.kafka_topic, {})
        return {p: int(o) for p, o in committed.items() if int(o)} == expected

    wait_for("Spark to commit every acknowledged trade", caught_up, 300, every=1)
    seen.probe.stop()
    seen.loop.stop()
    seen.figures["summarized_rows"] = seen.loop.publish_once()

    def identical() -> bool:
        sets = [drive_objects(drive, settings.s3_bucket) for drive in drives]
        union = set().union(*sets)
        seen.figures["objects_missing_per_drive"] = [len(union - s) for s in sets]
        return all(s == union for s in sets)

    try:
        wait_for("every drive to hold every object", identical, 180, every=2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen.figures}") from None
    seen.figures["all_drives_identical_after_wipe_s"] = round(time.monotonic() - wiped, 1)


def _watch(seen: DriveDrill, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _note_spark(seen)
        time.sleep(0.5)


# --- what the drill saw, judged ---------------------------------------------------------


def test_writes_and_reads_went_on_through_the_lost_drive(drill: DriveDrill) -> None:
    assert not drill.probe.failures, drill.probe.failures[:5]
    assert not drill.loop.failures, drill.loop.failures[:5]
    assert len(drill.spark_pids) == 1, "Spark was restarted"
    wipe, healed = drill.marks["wipe"], drill.marks["healed"]
    assert [b for b in drill.batches if wipe <= b[0] <= healed], "no Spark batch while degraded"
    assert [t for t, _ in drill.probe.puts if wipe <= t <= healed], "no PUT while degraded"
    assert drill.loop.publishes > 0


def test_the_lake_and_the_summaries_hold_everything(drill: DriveDrill) -> None:
    settings = drill.settings
    con = lake.duckdb_with_lake(settings)
    coordinates = set(
        con.execute("SELECT kafka_partition, kafka_offset FROM processed_trades").fetchall()
    )
    rows = con.execute("SELECT count(*) FROM processed_trades").fetchone()[0]
    delivered = drill.feed.delivered
    print(
        f"lake: {rows} rows for {len(delivered)} acknowledged trades; "
        f"{len(delivered - coordinates)} missing, {rows - len(coordinates)} doubled"
    )
    assert coordinates == delivered and rows == len(delivered)
    assert drill.figures["summarized_rows"] == rows
    client = lake.s3_client(settings)
    for key, digest in drill.probe.written.items():
        body = client.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest, key


def test_minio_healed_the_blank_drive_and_the_write_latency_is_printed(
    drill: DriveDrill,
) -> None:
    settings = drill.settings
    drives = services.minio_drives(settings)
    sets = [drive_objects(drive, settings.s3_bucket) for drive in drives]
    assert all(s == sets[0] for s in sets) and sets[0]
    steady, wipe, healed = drill.marks["steady"], drill.marks["wipe"], drill.marks["healed"]
    puts = drill.probe.puts
    drill.figures["put_latency"] = {
        "before": percentiles([s for t, s in puts if steady <= t < wipe]),
        "blank_or_healing": percentiles([s for t, s in puts if wipe <= t < healed]),
        "after": percentiles([s for t, s in puts if t >= healed]),
    }
    batches = drill.batches
    drill.figures["spark_batch_ms"] = {
        "before": percentiles([ms / 1000 for t, _, ms in batches if steady <= t < wipe]),
        "blank_or_healing": percentiles([ms / 1000 for t, _, ms in batches if wipe <= t < healed]),
        "after": percentiles([ms / 1000 for t, _, ms in batches if t >= healed]),
    }
    print("minio drive drill: " + json.dumps(drill.figures))
