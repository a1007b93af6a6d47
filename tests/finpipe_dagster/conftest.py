"""A lake of known trades under a unique prefix: a Delta table written as Spark writes it."""

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import CommitProperties, Transaction, write_deltalake

from finpipe import contracts, lake
from finpipe.settings import Settings
from finpipe_dagster.definitions import build_resources
from finpipe_dagster.resources import FinpipeSettings, LakeTables

DAY = dt.date(2026, 3, 2)
SYMBOLS = ("BINANCE:BTCUSDT", "AAPL")


@dataclass
class SeededLake:
    settings: Settings
    resource: FinpipeSettings
    rows: list[dict] = field(default_factory=list)
    next_batch: int = 0
    next_offset: dict[int, int] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, object]:
        return build_resources(self.resource)

    @property
    def lake_tables(self) -> LakeTables:
        found = self.resources["lake_tables"]
        assert isinstance(found, LakeTables)
        return found

    @property
    def table(self) -> lake.LakeTable:
        return lake.trades_table(self.settings)

    def write(self, rows: list[dict]) -> int:
        """One batch, as the Spark query commits one: one file per (day, symbol), one
        commit carrying the query's app transaction. Returns the table's new version."""
        table = pa.Table.from_pylist(rows, schema=contracts.LAKE_SCHEMA)
        snapshot = self.table.ensure()
        write_deltalake(
            snapshot,
            table,
            mode="append",
            commit_properties=CommitProperties(
                app_transactions=[Transaction(contracts.SPARK_APP_ID, self.next_batch)]
            ),
        )
        self.next_batch += 1
        self.rows.extend(rows)
        snapshot.update_incremental()
        return snapshot.version()

    def trades(self, day: dt.date, count: int, seed: int, minutes: int = 5) -> list[dict]:
        """Random trades of the day's 10:00-10:0x UTC; a symbol keeps one Kafka partition."""
        rng = random.Random(seed)
        start = dt.datetime.combine(day, dt.time(10), tzinfo=dt.UTC)
        rows = []
        for _ in range(count):
            symbol = rng.choice(SYMBOLS)
            partition = SYMBOLS.index(symbol)
            offset = self.next_offset.get(partition, 0)
            self.next_offset[partition] = offset + 1
            # whole seconds: equal trade times are frequent, so ties by offset matter
            ts = start + dt.timedelta(seconds=rng.randrange(minutes * 60))
            price = round(rng.uniform(90, 110), 2)
            volume = round(rng.uniform(0.001, 5), 3)
            rows.append(
                {
                    "symbol": symbol,
                    "price": price,
                    "volume": volume,
                    "trade_value": price * volume,
                    "trade_ts": ts,
                    "ingest_ts": ts + dt.timedelta(milliseconds=20),
                    "processed_ts": ts + dt.timedelta(seconds=2),
                    "conditions": None,
                    "kafka_partition": partition,
                    "kafka_offset": offset,
                    "trade_date": day,
                }
            )
        return rows


@pytest.fixture
def seeded(infrastructure: Settings, tmp_path: Path) -> Iterator[SeededLake]:
    run = uuid.uuid4().hex[:10]
    resource = FinpipeSettings(
        finpipe_home=str(tmp_path / "finpipe-home"),  # its own heartbeat files
        lake_prefix=f"test-dagster/{run}/processed_trades",
        summaries_prefix=f"test-dagster/{run}/summaries",
        kafka_topic=f"test-dagster-{run}",
    )
    yield SeededLake(resource.load(), resource)
    fs = lake.s3_filesystem(infrastructure)
    fs.delete_dir_contents(f"{infrastructure.s3_bucket}/test-dagster/{run}", missing_dir_ok=True)
