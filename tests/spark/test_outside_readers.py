"""An implementation other than finpipe's writer reads the lake and gets exactly its rows.

finpipe's sink functions write a table (symbols that need escaping, a replayed batch, a
compaction and a vacuum); Delta Lake's own Spark reader (delta-spark from Maven Central,
the release built on the installed pyspark) reads it, and must return exactly the rows
``finpipe.lake`` returns: the table is a Delta table, not a private format.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from finpipe import contracts, lake
from finpipe.settings import load_settings
from infra import artifacts
from spark.lake_files import LAKE_KIND, LakeLocation, write_batch_rows
from spark.parse import PREPARED_SCHEMA
from spark.sink import LakeBatchSink

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 3, 2)
DAY_MS = int(dt.datetime(2026, 3, 2, 14, 30, tzinfo=dt.UTC).timestamp() * 1000)
SYMBOLS = ("BINANCE:BTCUSDT", "BRK.B", "COINBASE:BTC-USD", "AAPL")


def _batch(batch_id: int, per_symbol: int) -> list[dict[str, object]]:
    rows = []
    for i, symbol in enumerate(SYMBOLS):
        for k in range(per_symbol):
            offset = batch_id * 1000 + k
            ts = DAY_MS + batch_id * 5000 + k * 7 + (86_400_000 if k % 5 == 4 else 0)
            rows.append(
                {
                    "valid": True,
                    "symbol": symbol,
                    "price": 100.0 + k,
                    "volume": 0.5 * (k + 1),
                    "trade_value": (100.0 + k) * 0.5 * (k + 1),
                    "trade_ts_ms": ts,
                    "ingest_ts_ms": ts + 3,
                    "conditions": ["1"] if k % 2 else None,
                    "kafka_partition": i,
                    "kafka_offset": offset,
                    "trade_date": DAY + dt.timedelta(days=1 if k % 5 == 4 else 0),
                }
            )
    return rows


def _write_and_commit(root: Path, table: DeltaTable, batch_id: int, rows: list) -> None:
    """What the executors and then the driver do for one micro-batch."""
    reports = write_batch_rows(
        pa.Table.from_pylist(rows, schema=PREPARED_SCHEMA).to_batches(),
        location=LakeLocation(str(root), str(root.parent / "rejects")),
        batch_id=batch_id,
        processed_ts_ms=DAY_MS + 60_000 * batch_id,
        filesystem=pafs.LocalFileSystem(),
    ).to_pylist()
    data = [r for r in reports if r["kind"] == LAKE_KIND]
    LakeBatchSink._commit(table, contracts.LAKE_TABLE, data, batch_id)


SPARK_READER = """
import sys
from pyspark.sql import SparkSession
import pyarrow.parquet as pq
from finpipe import contracts

jars, table, out = sys.argv[1:]
spark = (
    SparkSession.builder.master("local[1]")
    .appName("finpipe-outside-reader")
    .config("spark.jars", jars)
    .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
    .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
    .config("spark.sql.session.timeZone", "UTC")
    .config("spark.ui.enabled", "false")
    .getOrCreate()
)
frame = spark.read.format("delta").load(table)
assert set(frame.columns) == set(contracts.LAKE_SCHEMA.names), frame.columns
rows = frame.select(*contracts.LAKE_SCHEMA.names).orderBy("kafka_partition", "kafka_offset")
pq.write_table(rows.toArrow(), out)
spark.stop()
"""


def test_delta_sparks_reader_returns_exactly_finpipes_rows(tmp_path: Path) -> None:
    settings = load_settings()
    delta = artifacts.ensure_delta_spark(settings.cache_dir)  # cached by `make test`
    root = tmp_path / "processed_trades"
    table = lake.local_table(root).ensure()
    for batch_id in range(6):
        _write_and_commit(root, table, batch_id, _batch(batch_id, 12))
    _write_and_commit(root, table, 3, _batch(3, 12))  # a replay: adds nothing
    table.optimize.compact(partition_filters=[("trade_date", "=", DAY.isoformat())])
    table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    expected = lake.snapshot_dataset(lake.local_table(root).open(), contracts.LAKE_TABLE)
    expected_rows = expected.to_table().sort_by([("kafka_partition", "ascending"),
                                                 ("kafka_offset", "ascending")])  # fmt: skip
    assert expected_rows.num_rows == 6 * 12 * len(SYMBOLS)

    # Spark in a process of its own: a JVM gateway started in the test process would stay
    # with it, and later tests of the same worker build sessions of their own.
    jars = ",".join(str(p) for p in sorted((delta.root / "libs").glob("*.jar")))
    out = tmp_path / "read-by-spark.parquet"
    subprocess.run(
        [sys.executable, "-c", SPARK_READER, jars, str(root), str(out)],
        check=True,
        timeout=600,
    )
    got = pq.read_table(out)
    assert got.num_rows == expected_rows.num_rows
    assert got.cast(contracts.LAKE_SCHEMA).to_pylist() == expected_rows.to_pylist()
    assert {r["symbol"] for r in got.to_pylist()} == set(SYMBOLS)
