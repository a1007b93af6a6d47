"""A small, hand-checked market: trades for the lake tail and summary rows around them.

Times are offsets from a reference ``now`` so the same data serves the pure query tests
(fixed ``now``) and the tests against MinIO and the running app (real ``now``). With a
15-minute tail the cutoff is ``now - 15 min``; ``NOW`` is hh:mm:20, so the tail covers
complete minutes from ``now - 14 min 20 s`` rounded up, called ``floor`` below.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from finpipe import contracts, lake, summaries
from finpipe.settings import Settings

UTC = dt.UTC
NOW = dt.datetime(2026, 3, 10, 14, 30, 20, tzinfo=UTC)
BTC = "BINANCE:BTCUSDT"
BRK = "BRK.B"
AAPL = "AAPL"
SYMBOLS = (AAPL, BTC, BRK)


@dataclass(frozen=True)
class Trade:
    symbol: str
    ts: dt.datetime
    price: float
    volume: float
    offset: int
    latency_ms: int = 100
    partition: int = 0


def seed_now() -> dt.datetime:
    """The latest hh:mm:20 UTC not after the real clock, and at least 20 minutes into its
    day: ``tail_trades`` puts a trade 5 s into ``now``'s minute, which must be in the past
    of ``now`` (and of the objects' write times) for tests that add a newer trade a few
    seconds after ``now``, and its 15 minutes of trades must fall on ``now``'s day."""
    real = dt.datetime.now(dt.UTC)
    now = real.replace(second=20, microsecond=0)
    if now > real:
        now -= dt.timedelta(minutes=1)
    if now.hour == 0 and now.minute < 20:
        now = now.replace(minute=0, second=0) - dt.timedelta(seconds=40)  # 23:59:20
    return now


def minute_of(now: dt.datetime, minutes_ago: int) -> dt.datetime:
    """The start of the minute ``minutes_ago`` before ``now``'s minute."""
    return now.replace(second=0, microsecond=0) - dt.timedelta(minutes=minutes_ago)


def tail_trades(now: dt.datetime) -> list[Trade]:
    """Trades in the last minutes. With NOW=14:30:20: BTC at 14:15:30 (before the tail's
    first full minute), 14:16:10, 14:16:40, 14:29:59, 14:30:05; BRK.B twice at 14:20:00.000
    (same millisecond: open/close decided by Kafka offset)."""
    m = minute_of
    return [
        Trade(BTC, m(now, 15) + dt.timedelta(seconds=30), 101.0, 1.0, 10),
        Trade(BTC, m(now, 14) + dt.timedelta(seconds=10), 103.0, 1.0, 11),
        Trade(BTC, m(now, 14) + dt.timedelta(seconds=40), 105.0, 3.0, 12),
        Trade(BTC, m(now, 1) + dt.timedelta(seconds=59), 104.0, 2.0, 13, latency_ms=100),
        Trade(BTC, m(now, 0) + dt.timedelta(seconds=5), 106.0, 1.0, 14, latency_ms=300),
        Trade(BRK, m(now, 10), 50.0, 10.0, 7, partition=1),
        Trade(BRK, m(now, 10), 51.0, 30.0, 8, partition=1),
    ]


def lake_table(trades: list[Trade]) -> pa.Table:
    rows = {name: [] for name in contracts.LAKE_SCHEMA.names}
    for t in trades:
        ingest = t.ts + dt.timedelta(milliseconds=5)
        rows["symbol"].append(t.symbol)
        rows["price"].append(t.price)
        rows["volume"].append(t.volume)
        rows["trade_value"].append(t.price * t.volume)
        rows["trade_ts"].append(t.ts)
        rows["ingest_ts"].append(ingest)
        rows["processed_ts"].append(ingest + dt.timedelta(milliseconds=t.latency_ms))
        rows["conditions"].append(["1"] if t.offset % 2 else None)
        rows["kafka_partition"].append(t.partition)
        rows["kafka_offset"].append(t.offset)
        rows["trade_date"].append(t.ts.date())
    return pa.table(rows, schema=contracts.LAKE_SCHEMA)


def ohlcv_table(now: dt.datetime) -> pa.Table:
    """Today's published bars (published before the tail started): BTC 14:10 and 14:15,
    a stale BTC 14:16 bar the tail must replace, and AAPL 13:59 (NOW-relative)."""
    day = now.date()
    rows = [
        (day, BTC, minute_of(now, 20), 100.0, 102.0, 99.0, 101.0, 2.0, 201.0, 2, 100.5),
        (day, BTC, minute_of(now, 15), 101.0, 101.0, 101.0, 101.0, 1.0, 101.0, 1, 101.0),
        (day, BTC, minute_of(now, 14), 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1, 1.0),
        (day, AAPL, minute_of(now, 31), 190.0, 201.0, 189.0, 200.0, 5.0, 975.0, 3, 195.0),
    ]
    return _table(summaries.OHLCV_1M, rows)


def past_ohlcv_table(day: dt.date) -> pa.Table:
    start = dt.datetime.combine(day, dt.time(12, 0), UTC)
    rows = [
        (day, BTC, start, 90.0, 92.0, 89.0, 91.0, 1.0, 91.0, 1, 91.0),
        (day, BTC, start + dt.timedelta(minutes=1), 91.0, 95.0, 91.0, 94.0, 3.0, 279.0, 2, 93.0),
    ]
    return _table(summaries.OHLCV_1M, rows)


def latest_table(now: dt.datetime) -> pa.Table:
    day = now.date()
    rows = [
        (day, BTC, 100.5, 1.0, minute_of(now, 16), now - dt.timedelta(minutes=16)),
        (day, AAPL, 200.0, 2.0, minute_of(now, 31), now - dt.timedelta(minutes=16)),
    ]
    return _table(summaries.LATEST_PRICES, rows)


def daily_table(day: dt.date) -> pa.Table:
    first = dt.datetime.combine(day, dt.time(9), UTC)
    rows = [
        (day, AAPL, 190.0, 201.0, 189.0, 200.0, 5.0, 975.0, 3, 195.0, 12.0, 0.01, first, first),
        (day, BTC, 100.0, 102.0, 99.0, 101.0, 3.0, 302.0, 3, 100.67, 3.0, 0.02, first, first),
    ]
    return _table(summaries.DAILY_SYMBOL_STATS, rows)


def _table(name: str, rows: list[tuple]) -> pa.Table:
    schema = summaries.SCHEMAS[name]
    columns = list(zip(*rows, strict=True))
    return pa.table(
        [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)], schema=schema
    )


# --- seeding the real object store -------------------------------------------------------


def unique_settings(settings: Settings, label: str = "dash") -> Settings:
    root = f"test-{label}-{uuid.uuid4().hex[:8]}"
    return settings.model_copy(
        update={"lake_prefix": f"{root}/processed_trades", "summaries_prefix": f"{root}/summaries"}
    )


def seeded_lake(settings: Settings) -> summaries.LakeState:
    """What seeded summaries were built from: the seed's own rows, not the lake's log."""
    return summaries.LakeState(settings.lake_uri)


def write_lake(settings: Settings, trades: list[Trade], first_batch: int = 1) -> int:
    """The trades as one micro-batch of the Spark query: one file per (day, symbol), one
    commit of the lake table carrying the query's app transaction ``first_batch``.
    Returns the table's new version."""
    return commit_batch(settings, lake_table(trades), first_batch)


def commit_batch(settings: Settings, rows: pa.Table, batch_id: int) -> int:
    """``rows`` (LAKE_SCHEMA) appended to the lake table as micro-batch ``batch_id``."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    table = lake.trades_table(settings).ensure()
    write_deltalake(
        table,
        rows.select(contracts.LAKE_SCHEMA.names).cast(contracts.LAKE_SCHEMA),
        mode="append",
        commit_properties=CommitProperties(
            app_transactions=[Transaction(contracts.SPARK_APP_ID, batch_id)]
        ),
    )
    table.update_incremental()
    return table.version()


def seed_store(settings: Settings, now: dt.datetime) -> None:
    """The hand-checked market, relative to ``now``, on the object store."""
    write_lake(settings, tail_trades(now))
    day, past = now.date(), now.date() - dt.timedelta(days=3)
    for name, when, table in (
        (summaries.OHLCV_1M, day, ohlcv_table(now)),
        (summaries.LATEST_PRICES, day, latest_table(now)),
        (summaries.DAILY_SYMBOL_STATS, day, daily_table(day)),
        (summaries.OHLCV_1M, past, past_ohlcv_table(past)),
        (summaries.DAILY_SYMBOL_STATS, past, daily_table(past)),
    ):
        summaries.publish(settings, name, when, table, source=seeded_lake(settings))


def many_trades(now: dt.datetime, symbols: list[str]) -> list[Trade]:
    """Two trades per symbol in the tail, 9 minutes apart (both on ``now``'s day: close to
    midnight they move up to its start): symbol ``i`` opens at ``10 + i`` and moves by
    ``(i - 25) / 10`` percent (so the first half falls)."""
    day_start = dt.datetime.combine(now.date(), dt.time(), UTC)
    first_ts = max(minute_of(now, 10), day_start)
    last_ts = max(minute_of(now, 1) + dt.timedelta(seconds=30), first_ts + dt.timedelta(seconds=1))
    trades = []
    for i, symbol in enumerate(symbols):
        first = 10.0 + i
        trades.append(Trade(symbol, first_ts, first, 1.0, 2 * i, partition=i % 3))
        last = first * (1 + (i - 25) / 1000)
        trades.append(Trade(symbol, last_ts, last, 2.0, 2 * i + 1, partition=i % 3))
    return trades


# --- a realistic market for the browser and the screenshots ------------------------------


def market_trades(now: dt.datetime, symbols: list[str], hours: float) -> pa.Table:
    """The simulator's market (realistic levels, GBM, bursts) over the ``hours`` before
    ``now``, one tick every 10 s, as lake rows (LAKE_SCHEMA)."""
    from producer.simulator.market import Market

    market = Market(trades_per_second=0.3, seed=42)
    end_ms = int(now.timestamp() * 1000)
    step_ms = 10_000
    rows: list[dict[str, object]] = []
    for tick_ms in range(end_ms - int(hours * 3600_000), end_ms, step_ms):
        rows.extend(market.tick(symbols, tick_ms, step_ms / 1000))
    index = {symbol: i for i, symbol in enumerate(symbols)}
    ts = pa.array([r["t"] for r in rows], pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    price = pa.array([r["p"] for r in rows], pa.float64())
    volume = pa.array([r["v"] for r in rows], pa.float64())
    table = pa.table(
        {
            "symbol": [r["s"] for r in rows],
            "price": price,
            "volume": volume,
            "trade_value": pc.multiply(price, volume),
            "trade_ts": ts,
            "ingest_ts": ts,
            "processed_ts": pc.add(ts.cast(pa.int64()), 900).cast(ts.type),
            "conditions": [r["c"] for r in rows],
            "kafka_partition": [index[r["s"]] % 3 for r in rows],
            "kafka_offset": list(range(len(rows))),
            "trade_date": ts.cast(pa.timestamp("ms")).cast(pa.date32()),
        }
    )
    return table.cast(contracts.LAKE_SCHEMA).sort_by("trade_ts")


def seed_market(
    settings: Settings, now: dt.datetime, symbols: list[str], hours: float = 3
) -> dict[str, float]:
    """``hours`` of the simulator's market before ``now``: summaries published by the
    summaries' own SQL up to a minute ago (as the refresh leaves them), and the last 16
    minutes in the lake as one micro-batch per minute (one file per symbol and minute).
    Returns each symbol's last price (where a live feed of the same market goes on from)."""
    import duckdb

    from finpipe_dagster.summaries import sql

    trades = market_trades(now, symbols, hours)
    published = trades.filter(
        pc.less(
            trades["trade_ts"], pa.scalar(now - dt.timedelta(minutes=1), trades["trade_ts"].type)
        )
    )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("processed_trades", published)
    source = seeded_lake(settings)
    for day in sorted(set(published["trade_date"].to_pylist())):
        for name, table in (
            (summaries.OHLCV_1M, sql.ohlcv_1m(con, day)),
            (summaries.DAILY_SYMBOL_STATS, sql.daily_symbol_stats(con, day)),
            (summaries.LATEST_PRICES, sql.latest_prices(con, day, now)),
        ):
            summaries.publish(settings, name, day, table, source=source)
    recent = trades.filter(
        pc.greater_equal(
            trades["trade_ts"], pa.scalar(now - dt.timedelta(minutes=16), trades["trade_ts"].type)
        )
    )
    con.register("recent", recent)
    batches = con.execute(
        "SELECT DISTINCT epoch_ms(trade_ts) // 60000 AS batch FROM recent ORDER BY batch"
    ).fetchall()
    for n, (batch,) in enumerate(batches):
        rows = con.execute(
            "SELECT * FROM recent WHERE epoch_ms(trade_ts) // 60000 = $b "
            "ORDER BY symbol, trade_ts, kafka_offset",
            {"b": batch},
        ).to_arrow_table()
        commit_batch(settings, rows, n)
    last = con.execute("SELECT symbol, arg_max(price, trade_ts) FROM recent GROUP BY symbol")
    return dict(last.fetchall())


# --- a live feed of the same market, on a Kafka topic of its own ---------------------------


def new_topic(settings: Settings, prefix: str = "live") -> str:
    """A new trades topic (3 partitions, like the platform's), created and empty."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_server})
    admin.create_topics([NewTopic(name, 3, 1)])[name].result(30)
    return name


def on_tick(symbol: str, price: float) -> float:
    """A price on the simulator's ticks: cents for shares, six significant digits else."""
    if ":" not in symbol and price >= 1:
        return round(price, 2)
    return round(price, 5 - math.floor(math.log10(price)))


class MarketFeed(threading.Thread):
    """Contract records (``TradeRecord``) of ``symbols`` on ``topic`` at ``rate`` trades/s,
    each price a small random step from the last (starting from ``prices``), stamped
    with the moment it is made as trade and receive time, until :meth:`stop`."""

    def __init__(self, settings: Settings, topic: str, prices: dict[str, float], rate: float):
        super().__init__(name="market-feed", daemon=True)
        self.settings, self.topic, self.rate = settings, topic, rate
        self.prices = dict(prices)
        self.sent = 0
        self._halt = threading.Event()

    def run(self) -> None:
        import random

        import msgspec
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.settings.kafka_server, "linger.ms": 5})
        encoder = msgspec.json.Encoder()
        symbols, rng, began = list(self.prices), random.Random(7), time.monotonic()
        while not self._halt.wait(0.02):
            now_ms = int(time.time() * 1000)
            for _ in range(int((time.monotonic() - began) * self.rate) - self.sent):
                symbol = symbols[self.sent % len(symbols)]
                price = on_tick(symbol, self.prices[symbol] * (1 + rng.gauss(0, 0.0001)))
                self.prices[symbol] = price
                record = contracts.TradeRecord(
                    symbol, price, 10.0, now_ms, None, now_ms, "simulator"
                )
                producer.produce(self.topic, key=symbol, value=encoder.encode(record))
                self.sent += 1
            producer.poll(0)
        producer.flush(5)

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
