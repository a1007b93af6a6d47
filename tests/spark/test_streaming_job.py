"""``finpipe-spark`` end to end: real Kafka, real MinIO, real Spark, read back with DuckDB.

Two tests, each starting the job several times (a JVM start is slow):
known trades land exactly as produced, and survive a stop and a restart; then SIGKILL at
different points while trades keep arriving, and reconcile by Kafka coordinates.
"""

from __future__ import annotations

import datetime as dt
import random
import socket
import time
from typing import Any

import pyarrow as pa
import pytest
from deltalake import CommitProperties, Transaction, write_deltalake

from finpipe import contracts, lake
from finpipe.contracts import TradeRecord
from finpipe.health import PROGRESS_KEY
from spark.metrics import COUNTERS
from tests.spark.spark_job_harness import (
    SparkJobEnv,
    TradeFeed,
    dumps,
    encode,
    end_offsets,
    heartbeat_offsets,
)
from tests.spark.spark_job_harness import (
    produce as _produce,
)
from tests.support.metrics import scrape, value
from tests.support.network import listening_addresses

NOW_MS = int(time.time() * 1000)
LAST_MS_OF_MARCH_1 = int(dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp() * 1000) - 1
ODD_SYMBOLS = ["BINANCE:BTCUSDT", "BRK.B", "COINBASE:BTC-USD"]

KNOWN = [
    TradeRecord("BINANCE:BTCUSDT", 97000.5, 0.25, NOW_MS, ["1"], NOW_MS + 3, "simulator"),
    TradeRecord("BRK.B", 450.1, 0.0, NOW_MS - 10, None, NOW_MS + 1, "finnhub"),
    TradeRecord("COINBASE:BTC-USD", 97001.0, 1.5, NOW_MS - 20, ["12", "37"], NOW_MS, "replay"),
    # Two trades with identical fields are two real trades: both must land.
    TradeRecord("AAPL", 190.0, 10.0, NOW_MS - 30, None, NOW_MS, "simulator"),
    TradeRecord("AAPL", 190.0, 10.0, NOW_MS - 30, None, NOW_MS, "simulator"),
    # The UTC day decides the partition, to the millisecond.
    TradeRecord("MSFT", 410.0, 2.0, LAST_MS_OF_MARCH_1, [], LAST_MS_OF_MARCH_1 + 9, "replay"),
    TradeRecord("MSFT", 411.0, 3.0, LAST_MS_OF_MARCH_1 + 1, None, NOW_MS, "replay"),
]
GARBAGE = [
    b"not json at all",
    b'{"symbol":"X","price":1.0,"volume":1.0,"trade_ts_ms":1,"conditions":null,'
    b'"ingest_ts_ms":1,"source":"bloomberg"}',
    b'{"symbol":"X","volume":1.0,"trade_ts_ms":1,"conditions":null,"ingest_ts_ms":1,'
    b'"source":"simulator"}',
]


def _expected_row(record: TradeRecord, coords: tuple[int, int]) -> tuple[Any, ...]:
    day = dt.datetime.fromtimestamp(record.trade_ts_ms / 1000, dt.UTC).date()
    return (
        record.symbol,
        record.price,
        record.volume,
        record.price * record.volume,
        record.trade_ts_ms,
        record.ingest_ts_ms,
        record.conditions,
        coords[0],
        coords[1],
        day,
    )


LAKE_ROWS_SQL = """
    SELECT symbol, price, volume, trade_value, epoch_ms(trade_ts), epoch_ms(ingest_ts),
           conditions, kafka_partition, kafka_offset, trade_date
    FROM processed_trades ORDER BY kafka_partition, kafka_offset
"""


def test_known_trades_land_exactly_and_a_restart_resumes_from_the_checkpoint(
    job_env: SparkJobEnv,
) -> None:
    coords = _produce(
        job_env,
        [(r.symbol, encode(r)) for r in KNOWN] + [("junk", value) for value in GARBAGE],
    )
    expected = sorted(
        (_expected_row(r, c) for r, c in zip(KNOWN, coords, strict=False)), key=lambda r: r[7:9]
    )
    job = job_env.start()
    beat = job_env.wait_health(
        job, lambda h: h.get("total_rows", 0) + h.get("total_rejects", 0) >= len(coords)
    )
    assert (beat["total_rows"], beat["total_rejects"]) == (len(KNOWN), len(GARBAGE)), dumps(beat)
    assert beat["status"] == "running"
    for key in ("batch_id", "rows", "max_trade_ts_ms", "batch_duration_ms", "files_written"):
        assert key in beat, dumps(beat)
    assert beat["max_trade_ts_ms"] == max(r.trade_ts_ms for r in KNOWN)
    # The query's progress, what a supervisor calls healthy: it goes on with no new data
    # (each idle trigger asked Kafka for the topic's end), not only with batches.
    assert beat[PROGRESS_KEY] is not None, dumps(beat)
    idle = job_env.wait_health(
        job, lambda h: (h[PROGRESS_KEY] or 0) > beat[PROGRESS_KEY] + 1, timeout=60
    )
    assert (idle["batch_id"], idle["total_rows"]) == (beat["batch_id"], beat["total_rows"])
    _scrape_agrees_with_the_heartbeat(job_env, oldest_receive_ms=LAST_MS_OF_MARCH_1 + 9)

    # What a DuckDB reader of the lake sees: exactly the produced trades, by value and type.
    settings = job_env.settings
    con = lake.duckdb_with_lake(settings)
    assert con.execute(LAKE_ROWS_SQL).fetchall() == expected
    assert con.execute(
        "SELECT count(*) FROM processed_trades WHERE processed_ts < ingest_ts"
    ).fetchone() == (0,)
    snapshot = lake.trades_table(settings).open()
    assert snapshot is not None
    files = lake.table_files(snapshot)
    assert {(f.trade_date, f.symbol) for f in files} == {(row[9], row[0]) for row in expected}
    assert sum(f.rows for f in files) == len(KNOWN)
    assert pa.schema(snapshot.schema().to_arrow()) == contracts.LAKE_SCHEMA
    assert lake.lake_dataset(settings).schema == contracts.LAKE_SCHEMA
    # Every batch is one commit naming the query's app transaction.
    assert snapshot.transaction_version(contracts.SPARK_APP_ID) == beat["batch_id"]
    assert beat["table_version"] == snapshot.version()
    assert any("symbol=BINANCE%3ABTCUSDT/" in uri for uri in snapshot.file_uris())

    # Rejects are kept, with the raw value and a reason, in the table beside the lake.
    rejects = lake.rejects_dataset(settings).to_table().to_pylist()
    assert sorted(r["value"].encode() for r in rejects) == sorted(GARBAGE)
    reasons = {r["value"]: r["reason"] for r in rejects}
    assert "bloomberg" in reasons[GARBAGE[1].decode()]
    assert "`price`" in reasons[GARBAGE[2].decode()]

    assert job_env.terminate(job) == 0, job_env.log_tail()
    final = job_env.health()
    assert final["final"] is True and final["status"] == "stopped", dumps(final)
    assert heartbeat_offsets(final, settings.kafka_topic) == end_offsets(coords)

    # Restart: resumes after the committed batches, re-reads and rewrites nothing.
    version = snapshot.version()
    last_batch = final["batch_id"]
    job = job_env.start()
    job_env.wait_health(job, lambda h: h.get("status") == "running")
    more = [TradeRecord("BRK.B", 451.0, 1.0, NOW_MS + 5, None, NOW_MS + 6, "finnhub")] * 2
    more_coords = _produce(job_env, [(r.symbol, encode(r)) for r in more])
    beat = job_env.wait_health(job, lambda h: h.get("total_rows", 0) >= len(more))
    assert (beat["total_rows"], beat["total_rejects"]) == (len(more), 0), dumps(beat)
    assert beat["batch_id"] > last_batch
    rows = lake.duckdb_with_lake(settings).execute(LAKE_ROWS_SQL).fetchall()
    assert rows == sorted(
        expected + [_expected_row(r, c) for r, c in zip(more, more_coords, strict=True)],
        key=lambda r: r[7:9],
    )
    after = lake.trades_table(settings).open()
    assert after is not None
    # The earlier files are all still there, unchanged; the new batch is a later commit.
    assert set(snapshot.file_uris()) <= set(after.file_uris())
    assert after.version() > version
    assert after.history(1)[0].get("operation") == "WRITE"
    assert job_env.terminate(job) == 0, job_env.log_tail()


def _kill_mid_batch(job_env: SparkJobEnv, job: Any, timeout: float = 120) -> str:
    """SIGKILL in the worst places: a batch's files written but not committed to the
    table, or committed to the table but not recorded in Spark's commit log.

    Returns where the kill landed, judged from the table and the checkpoint after it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spark_done = max(job_env.committed_batches(), default=-1)
        if job_env.lake_committed_batch() > spark_done or job_env.uncommitted_files():
            job_env.kill(job)
            if job_env.lake_committed_batch() > max(job_env.committed_batches(), default=-1):
                return "mid-batch (in the table, not in Spark's commit log)"
            if job_env.uncommitted_files():
                return "mid-batch (files written, not committed)"
            return "right after a commit"
        assert job.poll() is None, job_env.log_tail()
        time.sleep(0.05)
    job_env.kill(job)
    return "at the timeout"


def _kill_during_startup(job_env: SparkJobEnv, job: Any) -> str:
    time.sleep(4)
    job_env.kill(job)
    return "during start-up (JVM starting or replaying)"


def _kill_after_next_commit(job_env: SparkJobEnv, job: Any) -> str:
    job_env.wait_health(job, lambda h: h.get("event") == "batch")
    time.sleep(random.uniform(0.2, 1.0))
    job_env.kill(job)
    return "shortly after a committed batch"


def test_sigkill_at_any_point_leaves_every_trade_exactly_once(job_env: SparkJobEnv) -> None:
    settings = job_env.settings
    snapshots: list[list[tuple[Any, ...]]] = []
    kills: list[str] = []
    with TradeFeed(settings, [*ODD_SYMBOLS, "AAPL"]) as feed:
        for kill in (
            _kill_mid_batch,
            _kill_during_startup,
            _kill_after_next_commit,
            _kill_mid_batch,
        ):
            job = job_env.start()
            kills.append(kill(job_env, job))
            # Whatever a reader sees right after a crash is final: no duplicate, and
            # (checked below) every row of it is still there at the end.
            snapshot = job_env.lake_rows()
            assert len(snapshot) == len(set(snapshot)), kills
            snapshots.append(snapshot)
        job = job_env.start()
        job_env.wait_health(job, lambda h: h.get("event") == "batch")
        feed.stop()
        assert not feed.failures, feed.failures
        ends = feed.end_offsets()
        job_env.wait_health(job, lambda h: heartbeat_offsets(h, settings.kafka_topic) == ends)

    rows = job_env.lake_rows()
    assert len(rows) == len(set(rows)), "a trade is in the lake twice"
    assert set(rows) == feed.delivered, (
        f"lost {len(feed.delivered - set(rows))}, extra {len(set(rows) - feed.delivered)}"
    )
    for snapshot in snapshots:
        assert set(snapshot) <= set(rows), "a reader saw a row that did not stay"
    assert job_env.terminate(job) == 0, job_env.log_tail()
    assert any(k.startswith("mid-batch") for k in kills), kills
    print(f"kills: {kills}; trades: {len(rows)}")


pytestmark = pytest.mark.timeout(600)


def test_a_new_checkpoint_over_a_written_lake_is_refused(job_env: SparkJobEnv) -> None:
    """A lost checkpoint would re-read the topic and number its batches as ones the table
    holds: exit 2, and say which settings to fix, before a Spark session is even built."""
    settings = job_env.settings
    write_deltalake(
        lake.trades_table(settings).ensure(),
        contracts.LAKE_SCHEMA.empty_table(),
        mode="append",
        commit_properties=CommitProperties(
            app_transactions=[Transaction(contracts.SPARK_APP_ID, 0)]
        ),
    )
    job = job_env.start()
    assert job.wait(timeout=120) == 2, job_env.log_tail()
    beat = job_env.health()
    assert beat["status"] == "refused", dumps(beat)
    for words in ("SPARK_CHECKPOINT_DIR", "LAKE_PREFIX", settings.lake_uri):
        assert words in beat["error"]
    assert "spark_query_started" not in job_env.log_tail(200)


def test_an_unreachable_lake_fails_at_start_with_the_settings_to_check(
    job_env: SparkJobEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    job = job_env.start()
    assert job.wait(timeout=120) == 1, job_env.log_tail()
    beat = job_env.health()
    assert beat["status"] == "failed", dumps(beat)
    assert endpoint in beat["error"] and "S3_ENDPOINT_URL" in beat["error"]
    assert "Traceback" not in job_env.log_tail(200)


def _scrape_agrees_with_the_heartbeat(job_env: SparkJobEnv, oldest_receive_ms: int) -> None:
    """While the query idles nothing moves: /metrics and the heartbeat are one moment."""
    settings = job_env.settings
    assert listening_addresses(settings.spark_metrics_port) == {"127.0.0.1"}
    samples = scrape(f"http://127.0.0.1:{settings.spark_metrics_port}/metrics")
    beat = job_env.health()
    for name, (key, _) in COUNTERS.items():
        assert value(samples, f"finpipe_spark_{name}_total") == beat[key], (name, dumps(beat))
    assert value(samples, "finpipe_spark_last_batch_id") == beat["batch_id"]
    assert value(samples, "finpipe_spark_last_commit_timestamp_seconds") == (
        beat["committed_ts_ms"] / 1000
    )
    assert value(samples, "finpipe_spark_last_progress_timestamp_seconds") >= (
        beat["committed_ts_ms"] / 1000 - 60
    )
    behind = [v for (n, _), v in samples.items() if n == "finpipe_spark_kafka_offsets_behind"]
    assert behind and sum(behind) == beat["lag_records"]
    assert value(samples, "finpipe_spark_batch_duration_seconds_count") == beat["batches"]
    # The first batch held every record, the oldest received (by its ingest time) on
    # March 1st: Spark's observed minimum reached the driver through the progress.
    waited = beat["committed_ts_ms"] / 1000 - oldest_receive_ms / 1000
    first_batch = value(samples, "finpipe_spark_receive_to_commit_seconds_sum")
    assert value(samples, "finpipe_spark_receive_to_commit_seconds_count") == beat["batches"] == 1
    assert abs(first_batch - waited) < 60, (first_batch, waited)
