"""A lake of known trades under a unique prefix, written in the contract's layout."""

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finpipe import contracts, lake
from finpipe.settings import Settings
from finpipe_dagster.definitions import build_resources
from finpipe_dagster.resources import FinpipeSettings

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

    def write(self, rows: list[dict], *, schema: pa.Schema = contracts.LAKE_SCHEMA) -> None:
        """One batch: one file per (day, symbol), as the Spark query writes them."""
        fs = lake.s3_filesystem(self.settings)
        groups: dict[tuple[dt.date, str], list[dict]] = {}
        for row in rows:
            groups.setdefault((row["trade_date"], row["symbol"]), []).append(row)
        for (day, symbol), group in groups.items():
            table = pa.Table.from_pylist(group, schema=contracts.LAKE_SCHEMA)
            table = table.select(schema.names).cast(schema)
            path = (
                f"{self.settings.s3_bucket}/{self.settings.lake_prefix}/"
                f"{contracts.partition_dir(day.isoformat(), symbol)}/"
                f"{contracts.batch_file_name(self.next_batch)}"
            )
            pq.write_table(table, path, filesystem=fs)
        self.next_batch += 1
        self.rows.extend(rows)

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
