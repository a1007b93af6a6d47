"""The DuckDB SQL of the summary tables, over a view ``processed_trades`` of one day.

Pure with respect to storage: each function takes a connection in which the view exists
(over the lake, or over an in-memory table in the unit tests) and returns an Arrow table
in the schema of ``finpipe.summaries.SCHEMAS``.

A bar and the order of trades (trade time, then Kafka partition, then offset) are the
core's (``finpipe.bars``), the same the dashboard uses for its live minutes.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa

from finpipe import bars, summaries

TRADE_ORDER = f"ORDER BY {bars.TRADE_ORDER}"

OHLCV_1M_SQL = f"""
SELECT
    trade_date, symbol, minute, open, high, low, close, volume, trade_value, trade_count,
    trade_value / nullif(volume, 0) AS vwap
FROM ({bars.ohlcv_1m_sql("processed_trades", "trade_date, symbol", "trade_date = $day")})
ORDER BY symbol, minute
"""

# Realized volatility: sqrt of the sum of squared log returns between consecutive
# 1-minute closes of the day (not annualized; NULL with fewer than two bars).
DAILY_SYMBOL_STATS_SQL = f"""
WITH bars AS ({OHLCV_1M_SQL}),
returns AS (
    SELECT symbol, ln(close / lag(close) OVER (PARTITION BY symbol ORDER BY minute)) AS r
    FROM bars
),
volatility AS (
    SELECT symbol, sqrt(sum(r * r)) AS realized_volatility FROM returns GROUP BY symbol
)
SELECT
    t.trade_date,
    t.symbol,
    first(t.price {TRADE_ORDER}) AS open,
    max(t.price) AS high,
    min(t.price) AS low,
    last(t.price {TRADE_ORDER}) AS close,
    sum(t.volume) AS volume,
    sum(t.trade_value) AS traded_value,
    count(*) AS trade_count,
    sum(t.trade_value) / nullif(sum(t.volume), 0) AS vwap,
    max(t.price) - min(t.price) AS high_low_range,
    any_value(v.realized_volatility) AS realized_volatility,
    min(t.trade_ts) AS first_trade_ts,
    max(t.trade_ts) AS last_trade_ts
FROM processed_trades AS t JOIN volatility AS v USING (symbol)
WHERE t.trade_date = $day
GROUP BY t.trade_date, t.symbol
ORDER BY t.symbol
"""

LATEST_PRICES_SQL = f"""
SELECT
    trade_date,
    symbol,
    last(price {TRADE_ORDER}) AS price,
    last(volume {TRADE_ORDER}) AS volume,
    max(trade_ts) AS trade_ts,
    $computed_ts::TIMESTAMPTZ AS computed_ts
FROM processed_trades
WHERE trade_date = $day
GROUP BY trade_date, symbol
ORDER BY symbol
"""


def _query(con: duckdb.DuckDBPyConnection, name: str, sql: str, **params: object) -> pa.Table:
    table = con.sql(sql, params=params).to_arrow_table()
    schema = summaries.SCHEMAS[name]
    return table.select(schema.names).cast(schema)


def ohlcv_1m(con: duckdb.DuckDBPyConnection, day: dt.date) -> pa.Table:
    return _query(con, summaries.OHLCV_1M, OHLCV_1M_SQL, day=day)


def daily_symbol_stats(con: duckdb.DuckDBPyConnection, day: dt.date) -> pa.Table:
    return _query(con, summaries.DAILY_SYMBOL_STATS, DAILY_SYMBOL_STATS_SQL, day=day)


def latest_prices(
    con: duckdb.DuckDBPyConnection, day: dt.date, computed_at: dt.datetime
) -> pa.Table:
    computed_ms = computed_at.replace(microsecond=computed_at.microsecond // 1000 * 1000)
    return _query(con, summaries.LATEST_PRICES, LATEST_PRICES_SQL, day=day, computed_ts=computed_ms)


# --- the incremental path: a day's bars as state, the published tables derived from it ---

STATE_BAR_EXTRA = (
    ("min(trade_ts)", "first_ts"),
    (f"arg_max(volume, {bars.TRADE_ORDER_IN_MINUTE})", "last_volume"),
)
"""Beyond a published bar, what the state keeps per minute: the first trade's time and the
last trade's volume (for the day's statistics and latest price). A refresh finds the older
trades of a minute that new trades joined in the lake's snapshot, by the files' bounds."""

STATE_SCHEMA = pa.schema(
    [
        *(
            summaries.SCHEMAS[summaries.OHLCV_1M].field(n)
            for n in (
                "trade_date",
                "symbol",
                "minute",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "trade_value",
                "trade_count",
            )
        ),
        ("last_ts", summaries.TS),
        ("first_ts", summaries.TS),
        ("last_volume", pa.float64()),
    ]
)

STATE_BARS_SQL = f"""
SELECT * FROM ({
    bars.ohlcv_1m_sql("day_rows", "trade_date, symbol", exact_sums=True, extra=STATE_BAR_EXTRA)
}) ORDER BY symbol, minute
"""
"""State bars of the rows in view ``day_rows`` (the lake's columns)."""

OHLCV_FROM_STATE_SQL = """
SELECT trade_date, symbol, minute, open, high, low, close, volume, trade_value, trade_count,
       trade_value / nullif(volume, 0) AS vwap
FROM state_bars ORDER BY symbol, minute
"""

# The day from its bars, every sum in minute order (see bars.ohlcv_1m_sql: exact_sums), so
# the same bars always give the same statistics. Realized volatility as in
# DAILY_SYMBOL_STATS_SQL.
STATS_FROM_STATE_SQL = """
WITH returns AS (
    SELECT symbol, minute,
           ln(close / lag(close) OVER (PARTITION BY symbol ORDER BY minute)) AS r
    FROM state_bars
),
volatility AS (
    SELECT symbol, sqrt(sum(r * r ORDER BY minute)) AS realized_volatility
    FROM returns GROUP BY symbol
)
SELECT
    b.trade_date, b.symbol,
    arg_min(b.open, b.minute) AS open,
    max(b.high) AS high,
    min(b.low) AS low,
    arg_max(b.close, b.minute) AS close,
    sum(b.volume ORDER BY b.minute) AS volume,
    sum(b.trade_value ORDER BY b.minute) AS traded_value,
    sum(b.trade_count) AS trade_count,
    sum(b.trade_value ORDER BY b.minute) / nullif(sum(b.volume ORDER BY b.minute), 0) AS vwap,
    max(b.high) - min(b.low) AS high_low_range,
    any_value(v.realized_volatility) AS realized_volatility,
    min(b.first_ts) AS first_trade_ts,
    max(b.last_ts) AS last_trade_ts
FROM state_bars AS b JOIN volatility AS v USING (symbol)
GROUP BY b.trade_date, b.symbol
ORDER BY b.symbol
"""

LATEST_FROM_STATE_SQL = """
SELECT trade_date, symbol,
       arg_max(close, minute) AS price,
       arg_max(last_volume, minute) AS volume,
       max(last_ts) AS trade_ts,
       $computed_ts::TIMESTAMPTZ AS computed_ts
FROM state_bars GROUP BY trade_date, symbol ORDER BY symbol
"""


def tables_from_state(
    con: duckdb.DuckDBPyConnection, computed_at: dt.datetime
) -> dict[str, pa.Table]:
    """The three published tables of a day from the view ``state_bars``."""
    computed_ms = computed_at.replace(microsecond=computed_at.microsecond // 1000 * 1000)
    return {
        summaries.OHLCV_1M: _query(con, summaries.OHLCV_1M, OHLCV_FROM_STATE_SQL),
        summaries.DAILY_SYMBOL_STATS: _query(
            con, summaries.DAILY_SYMBOL_STATS, STATS_FROM_STATE_SQL
        ),
        summaries.LATEST_PRICES: _query(
            con, summaries.LATEST_PRICES, LATEST_FROM_STATE_SQL, computed_ts=computed_ms
        ),
    }
