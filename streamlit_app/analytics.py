"""Every query of the dashboard, in DuckDB SQL with bound parameters.

The queries run over one :class:`~streamlit_app.store.Snapshot`: the summary tables of
the days on screen (``ohlcv``, ``daily``, ``latest``) and the lake's last minutes
(``tail``), registered as Arrow tables. Values from the user (symbol, window, day)
only ever reach SQL as parameters.

1-minute bars join two sources: the published ``ohlcv_1m`` summary for minutes before
the tail starts, and bars computed here from the tail for the minutes it fully covers,
so the chart is live between two summary refreshes. Both use the same definitions:
open/close are the first/last trade by (trade_ts, kafka_partition, kafka_offset) and
VWAP is traded value / volume.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import duckdb
import pandas as pd

from streamlit_app.store import Snapshot
from streamlit_app.windows import Window, ceil_minute

TRADE_TAPE_ROWS = 50
LATENCY_MINUTES = 5

_BARS = """
WITH tail_bars AS (
    SELECT
        symbol,
        time_bucket(INTERVAL 1 minute, trade_ts) AS minute,
        arg_min(price, (trade_ts, kafka_partition, kafka_offset)) AS open,
        max(price) AS high,
        min(price) AS low,
        arg_max(price, (trade_ts, kafka_partition, kafka_offset)) AS close,
        sum(volume) AS volume,
        sum(trade_value) AS trade_value,
        count(*) AS trade_count
    FROM tail
    WHERE trade_ts >= $tail_floor AND list_contains($symbols, symbol)
    GROUP BY ALL
),
bars AS (
    SELECT symbol, minute, open, high, low, close, volume, trade_value, trade_count
    FROM ohlcv
    WHERE minute < $tail_floor AND list_contains($symbols, symbol)
    UNION ALL
    SELECT * FROM tail_bars
)
"""


def connection(snapshot: Snapshot) -> duckdb.DuckDBPyConnection:
    """The snapshot's DuckDB connection (one per snapshot; tables registered zero-copy)."""
    if snapshot.connection is None:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("ohlcv", snapshot.ohlcv)
        con.register("daily", snapshot.daily)
        con.register("latest", snapshot.latest)
        con.register("tail", snapshot.tail)
        snapshot.connection = con
    return snapshot.connection


def _tail_floor(snapshot: Snapshot) -> dt.datetime:
    """First minute the tail covers completely; bars before it come from the summary."""
    if snapshot.tail_cutoff is None:
        return dt.datetime.max.replace(tzinfo=dt.UTC)
    return ceil_minute(snapshot.tail_cutoff)


def _frame(snapshot: Snapshot, sql: str, params: dict[str, object]) -> pd.DataFrame:
    return connection(snapshot).execute(sql, params).df()


# --- header -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Freshness:
    newest_trade_ts: dt.datetime | None
    age_seconds: float | None


def lake_freshness(snapshot: Snapshot) -> Freshness:
    """Age of the newest trade: from the tail, else from the latest-prices summary."""
    newest = (
        connection(snapshot)
        .execute(
            """
            SELECT max(ts) FROM (
                SELECT max(trade_ts) AS ts FROM tail
                UNION ALL
                SELECT max(trade_ts) FROM latest
            )
            """
        )
        .fetchone()[0]
    )
    if newest is None:
        return Freshness(None, None)
    return Freshness(newest, (snapshot.now - newest).total_seconds())


@dataclass(frozen=True)
class Latency:
    p50_ms: float | None
    p95_ms: float | None
    trades: int


def end_to_end_latency(snapshot: Snapshot, minutes: int = LATENCY_MINUTES) -> Latency:
    """Producer receive -> row in the lake (ingest_ts -> processed_ts), recent rows only."""
    row = (
        connection(snapshot)
        .execute(
            """
            SELECT
                quantile_cont(date_diff('millisecond', ingest_ts, processed_ts), 0.5),
                quantile_cont(date_diff('millisecond', ingest_ts, processed_ts), 0.95),
                count(*)
            FROM tail
            WHERE processed_ts >= $since
            """,
            {"since": snapshot.now - dt.timedelta(minutes=minutes)},
        )
        .fetchone()
    )
    return Latency(row[0], row[1], int(row[2]))


# --- symbols and tiles ------------------------------------------------------------------


def symbols_present(snapshot: Snapshot) -> list[str]:
    """Symbols with data on screen (summaries of the loaded days or the tail)."""
    rows = (
        connection(snapshot)
        .execute(
            """
            SELECT DISTINCT symbol FROM (
                SELECT symbol FROM ohlcv UNION ALL SELECT symbol FROM latest
                UNION ALL SELECT symbol FROM daily UNION ALL SELECT symbol FROM tail
            )
            ORDER BY symbol
            """
        )
        .fetchall()
    )
    return [r[0] for r in rows]


def price_tiles(snapshot: Snapshot, symbols: list[str]) -> pd.DataFrame:
    """Per symbol of today's session: last price, change since the session's first trade,
    and the 1-minute closes for a sparkline. Symbols without trades today get NULLs."""
    day_start = dt.datetime.combine(snapshot.today, dt.time(), dt.UTC)
    return _frame(
        snapshot,
        _BARS
        + """
        , session_bars AS (
            SELECT * FROM bars WHERE minute >= $day_start AND minute < $day_end
        ),
        last_trade AS (
            SELECT symbol, arg_max(price, (trade_ts, kafka_partition, kafka_offset)) AS price,
                   max(trade_ts) AS trade_ts
            FROM (
                SELECT symbol, price, trade_ts, -1 AS kafka_partition, -1 AS kafka_offset
                FROM latest
                UNION ALL
                SELECT symbol, price, trade_ts, kafka_partition, kafka_offset FROM tail
            )
            WHERE trade_ts >= $day_start AND trade_ts < $day_end
            GROUP BY symbol
        ),
        session AS (
            SELECT symbol, arg_min(open, minute) AS session_open,
                   list(close ORDER BY minute) AS sparkline
            FROM session_bars GROUP BY symbol
        )
        SELECT
            s.symbol,
            l.price,
            l.trade_ts,
            se.session_open,
            (l.price / se.session_open - 1) * 100 AS change_pct,
            coalesce(se.sparkline, []) AS sparkline
        FROM unnest($symbols) AS s(symbol)
        LEFT JOIN last_trade l USING (symbol)
        LEFT JOIN session se USING (symbol)
        ORDER BY s.symbol
        """,
        {
            "symbols": symbols,
            "tail_floor": _tail_floor(snapshot),
            "day_start": day_start,
            "day_end": day_start + dt.timedelta(days=1),
        },
    )


# --- charts -----------------------------------------------------------------------------


def candles(snapshot: Snapshot, symbol: str, window: Window) -> pd.DataFrame:
    """1-minute OHLCV of one symbol in the window, with the bar's VWAP and the session VWAP
    (cumulative from the first bar of the bar's UTC day)."""
    return _frame(
        snapshot,
        _BARS
        + """
        SELECT
            minute, open, high, low, close, volume, trade_value, trade_count,
            trade_value / nullif(volume, 0) AS vwap,
            sum(trade_value) OVER session / nullif(sum(volume) OVER session, 0) AS session_vwap
        FROM bars
        WINDOW session AS (PARTITION BY CAST(minute AS DATE) ORDER BY minute)
        QUALIFY minute >= $start AND minute < $end
        ORDER BY minute
        """,
        {
            "symbols": [symbol],
            "tail_floor": _tail_floor(snapshot),
            "start": window.start,
            "end": window.end,
        },
    )


def normalized_prices(snapshot: Snapshot, symbols: list[str], window: Window) -> pd.DataFrame:
    """Close of each minute as a percentage of the symbol's first close in the window."""
    return _frame(
        snapshot,
        _BARS
        + """
        , windowed AS (
            SELECT symbol, minute, close FROM bars WHERE minute >= $start AND minute < $end
        )
        SELECT symbol, minute, close,
               100 * close / first_value(close) OVER (PARTITION BY symbol ORDER BY minute)
                   AS normalized
        FROM windowed
        ORDER BY symbol, minute
        """,
        {
            "symbols": symbols,
            "tail_floor": _tail_floor(snapshot),
            "start": window.start,
            "end": window.end,
        },
    )


# --- tables -----------------------------------------------------------------------------


def trade_tape(snapshot: Snapshot, symbol: str, limit: int = TRADE_TAPE_ROWS) -> pd.DataFrame:
    """The most recent trades of one symbol in the lake tail, newest first."""
    return _frame(
        snapshot,
        """
        SELECT trade_ts, symbol, price, volume, trade_value, conditions,
               date_diff('millisecond', ingest_ts, processed_ts) AS latency_ms,
               kafka_partition, kafka_offset
        FROM tail
        WHERE symbol = $symbol
        ORDER BY trade_ts DESC, kafka_partition DESC, kafka_offset DESC
        LIMIT $limit
        """,
        {"symbol": symbol, "limit": limit},
    )


def daily_stats(snapshot: Snapshot, day: dt.date) -> pd.DataFrame:
    """The published daily statistics of every symbol for one day."""
    return _frame(
        snapshot,
        """
        SELECT symbol, open, high, low, close, volume, traded_value, trade_count, vwap,
               realized_volatility, first_trade_ts, last_trade_ts
        FROM daily
        WHERE trade_date = $day
        ORDER BY symbol
        """,
        {"day": day},
    )


def is_number(value: object) -> bool:
    """True for a real number (not None/NaN): DuckDB NULLs arrive as NaN in pandas."""
    return isinstance(value, int | float) and not math.isnan(value)
