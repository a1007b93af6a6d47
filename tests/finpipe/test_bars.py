"""The one 1-minute bar: the ohlcv_1m summary and the dashboard's tail bars agree.

Plain values in an in-memory DuckDB: trades of one symbol with equal trade times across
Kafka partitions and offsets, so open and close depend on the tie-break.
"""

import datetime as dt

import duckdb
import pyarrow as pa

from finpipe import bars, contracts
from finpipe_dagster.summaries import sql as summary_sql

DAY = dt.date(2026, 3, 2)
T0 = dt.datetime(2026, 3, 2, 14, 30, tzinfo=dt.UTC)


def trades() -> pa.Table:
    # (seconds after T0, kafka partition, offset, price, volume)
    rows = [
        (0.0, 1, 5, 10.0, 1.0),
        (0.0, 0, 9, 11.0, 2.0),  # same time, lower partition: the minute's open
        (59.5, 0, 40, 12.0, 1.0),
        (59.5, 1, 2, 13.0, 1.0),  # same time, higher partition: the minute's close
        (60.0, 2, 0, 14.0, 3.0),
        (61.0, 2, 7, 9.0, 1.0),
        (61.0, 2, 3, 8.0, 1.0),  # same time and partition, lower offset
    ]
    ts = [T0 + dt.timedelta(seconds=s) for s, *_ in rows]
    price = [r[3] for r in rows]
    volume = [r[4] for r in rows]
    columns = {
        "symbol": ["AAPL"] * len(rows),
        "price": price,
        "volume": volume,
        "trade_value": [p * v for p, v in zip(price, volume, strict=True)],
        "trade_ts": ts,
        "ingest_ts": ts,
        "processed_ts": ts,
        "conditions": [None] * len(rows),
        "kafka_partition": [r[1] for r in rows],
        "kafka_offset": [r[2] for r in rows],
        "trade_date": [DAY] * len(rows),
    }
    return pa.table({f.name: columns[f.name] for f in contracts.LAKE_SCHEMA}).cast(
        contracts.LAKE_SCHEMA
    )


def test_summary_and_dashboard_bars_are_the_same_bars() -> None:
    con = duckdb.connect()
    table = trades()
    con.register("processed_trades", table)
    con.register("tail", table)
    summary = summary_sql.ohlcv_1m(con, DAY).to_pylist()
    live = con.sql(f"{bars.ohlcv_1m_sql('tail', 'symbol')} ORDER BY minute").fetchall()
    assert [(r["open"], r["high"], r["low"], r["close"], r["trade_count"]) for r in summary] == [
        (11.0, 13.0, 10.0, 13.0, 4),
        (14.0, 14.0, 8.0, 9.0, 3),
    ]
    columns = ("open", "high", "low", "close", "volume", "trade_value", "trade_count")
    assert [tuple(r[c] for c in columns) for r in summary] == [tuple(row[2:9]) for row in live]
    assert [r["minute"] for r in summary] == [row[1] for row in live]


def test_daily_open_and_close_use_the_same_tie_break() -> None:
    con = duckdb.connect()
    con.register("processed_trades", trades())
    [stats] = summary_sql.daily_symbol_stats(con, DAY).to_pylist()
    assert (stats["open"], stats["close"]) == (11.0, 9.0)
    [latest] = summary_sql.latest_prices(con, DAY, T0).to_pylist()
    assert latest["price"] == 9.0
