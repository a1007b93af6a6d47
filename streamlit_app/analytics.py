"""Every query of the dashboard, in DuckDB SQL with bound parameters.

The queries run over one :class:`~streamlit_app.store.Snapshot`: the summary tables of
the days on screen (``ohlcv``, ``daily``, ``latest``) and the lake's last minutes
(``tail``), registered as Arrow tables. Values from the user (symbol, window, day)
only ever reach SQL as parameters.

1-minute bars join two sources: the published ``ohlcv_1m`` summary for minutes before
the tail starts, and bars computed here from the tail for the minutes it fully covers,
so the chart is live between two summary refreshes. Both are the core's bar
(``finpipe.bars``): open/close are the first/last trade by (trade_ts, kafka_partition,
kafka_offset) and VWAP is traded value / volume.

Speed (target p95 <= 50 ms per query over a day of 10 million trades; figures in
``docs/benchmarks/dashboard.md``): the snapshot's connection is a cursor on one
process-wide DuckDB database, the tail is aggregated into ``tail_bars`` once per snapshot
and every bar, latest-price and symbol query reads those instead of the raw tail, and
hot expressions avoid per-row time zone arithmetic (``date_diff``/``time_bucket`` on
TIMESTAMPTZ go through ICU; epoch arithmetic gives the same values for UTC
millisecond timestamps). What remains per query is mostly DuckDB's planning.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from dataclasses import dataclass

import duckdb
import pandas as pd

from finpipe import bars
from streamlit_app.store import Snapshot
from streamlit_app.windows import Window, ceil_minute

TRADE_TAPE_ROWS = 50
LATENCY_MINUTES = 5
# A sparkline of a whole day (1,440 closes) is cut to about this many points: the cell is a
# few hundred pixels wide, and the table is sent to every session every second.
SPARKLINE_POINTS = 120

# The tail's 1-minute bars (the core's bar, finpipe.bars), computed once per snapshot
# (every minute the tail touches, the partial first one included) and shared by all
# queries of the refresh. ``last_ts`` (newest trade of the bar) lets the latest-price and
# freshness queries use the bars instead of the raw tail.
_TAIL_BARS = f"CREATE TEMP TABLE tail_bars AS {bars.ohlcv_1m_sql('tail', 'symbol')}"

_BARS = """
WITH bars AS (
    SELECT symbol, minute, open, high, low, close, volume, trade_value, trade_count
    FROM ohlcv
    WHERE minute < $tail_floor AND list_contains($symbols, symbol)
    UNION ALL
    SELECT symbol, minute, open, high, low, close, volume, trade_value, trade_count
    FROM tail_bars
    WHERE minute >= $tail_floor AND list_contains($symbols, symbol)
)
"""

_DATABASE_LOCK = threading.Lock()
_database: duckdb.DuckDBPyConnection | None = None


def _cursor() -> duckdb.DuckDBPyConnection:
    """A new connection to the process's in-memory DuckDB database.

    Opening a database costs tens of ms; a cursor on an open one (a connection of its own,
    with its own registrations, temp tables and settings, usable from another thread) costs
    microseconds. The database is created on first use and lives as long as the process.
    """
    global _database
    with _DATABASE_LOCK:
        if _database is None:
            _database = duckdb.connect()
        return _database.cursor()


def connection(snapshot: Snapshot) -> duckdb.DuckDBPyConnection:
    """The snapshot's DuckDB connection: a cursor on the process database with the
    snapshot's tables registered zero-copy and the tail's bars computed (once)."""
    if snapshot.connection is None:
        con = _cursor()
        con.execute("SET TimeZone = 'UTC'")
        con.register("ohlcv", snapshot.ohlcv)
        con.register("daily", snapshot.daily)
        con.register("latest", snapshot.latest)
        con.register("tail", snapshot.tail)
        con.execute(_TAIL_BARS)
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
    newest_received_ts: dt.datetime | None = None
    """The producer's receive time of the newest trade read from the lake's tail."""


def lake_freshness(snapshot: Snapshot) -> Freshness:
    """Age of the newest trade: from the tail, else from the latest-prices summary."""
    newest, received = (
        connection(snapshot)
        .execute(
            """
            SELECT max(ts), (SELECT max(ingest_ts) FROM tail) FROM (
                SELECT max(trade_ts) AS ts FROM tail
                UNION ALL
                SELECT max(trade_ts) FROM latest
            )
            """
        )
        .fetchone()
    )
    if newest is None:
        return Freshness(None, None, received)
    return Freshness(newest, (snapshot.now - newest).total_seconds(), received)


@dataclass(frozen=True)
class Latency:
    p50_ms: float | None
    p95_ms: float | None
    trades: int
    since: dt.datetime | None = None
    """When the window starts later than its minutes ago: the lake writer's current run
    began then (its catch-up is left out); None when the writer ran all along."""


# A lake writer that committed nothing for this long while trades waited for it was not
# running (a restart: the JVM alone takes ~15 s); a quiet market pauses it too, but then
# no trade waits through the pause.
WRITER_PAUSE_SECONDS = 30.0


def end_to_end_latency(snapshot: Snapshot, minutes: int = LATENCY_MINUTES) -> Latency:
    """Producer receive -> row in the lake (ingest_ts -> processed_ts), over the trades
    received in the last ``minutes`` and since the lake writer's current run began.

    A micro-batch has one ``processed_ts``. A batch committed more than
    ``WRITER_PAUSE_SECONDS`` after the previous one (or after the tail's start) that holds
    a trade received that long before it is a writer's first after a pause: a (re)started
    platform catching up. Trades received before the newest such batch are left out: that
    catch-up is not the platform's latency. Later batches count, however slow.
    """
    row = (
        connection(snapshot)
        .execute(
            """
            WITH batches AS (
                SELECT processed_ts, min(ingest_ts) AS first_received
                FROM tail GROUP BY processed_ts
            ),
            paused AS (
                SELECT processed_ts, first_received,
                       coalesce(lag(processed_ts) OVER (ORDER BY processed_ts), $tail_start)
                           AS previous
                FROM batches
            ),
            run AS (
                SELECT max(processed_ts) AS began FROM paused
                WHERE epoch_ms(processed_ts) - epoch_ms(previous) > $pause_ms
                  AND epoch_ms(processed_ts) - epoch_ms(first_received) > $pause_ms
            )
            SELECT quantile_cont(latency_ms, [0.5, 0.95]), count(latency_ms), any_value(began)
            FROM run LEFT JOIN (
                SELECT epoch_ms(processed_ts) - epoch_ms(ingest_ts) AS latency_ms, ingest_ts
                FROM tail WHERE ingest_ts >= $since
            ) AS recent ON began IS NULL OR ingest_ts >= began
            """,
            {
                "since": snapshot.now - dt.timedelta(minutes=minutes),
                "tail_start": snapshot.tail_cutoff,
                "pause_ms": WRITER_PAUSE_SECONDS * 1000,
            },
        )
        .fetchone()
    )
    p50, p95 = row[0] if row[0] is not None else (None, None)
    began = row[2]
    since = (
        began
        if began is not None and began > snapshot.now - dt.timedelta(minutes=minutes)
        else None
    )
    return Latency(p50, p95, int(row[1]), since)


# --- symbols and tiles ------------------------------------------------------------------


def symbols_present(snapshot: Snapshot) -> list[str]:
    """Symbols with data on screen (summaries of the loaded days or the tail)."""
    rows = (
        connection(snapshot)
        .execute(
            """
            SELECT DISTINCT symbol FROM (
                SELECT symbol FROM ohlcv UNION ALL SELECT symbol FROM latest
                UNION ALL SELECT symbol FROM daily UNION ALL SELECT symbol FROM tail_bars
            )
            ORDER BY symbol
            """
        )
        .fetchall()
    )
    return [r[0] for r in rows]


def price_tiles(snapshot: Snapshot, symbols: list[str]) -> pd.DataFrame:
    """Per symbol of today's session: last price, change since the session's first trade,
    and the 1-minute closes for a sparkline (every n-th and the last, at most about
    ``SPARKLINE_POINTS``). Symbols without trades today get NULLs."""
    day_start = dt.datetime.combine(snapshot.today, dt.time(), dt.UTC)
    tiles = _frame(
        snapshot,
        _BARS
        + """
        , session_bars AS (
            SELECT * FROM bars WHERE minute >= $day_start AND minute < $day_end
        ),
        last_trade AS (
            SELECT symbol, arg_max(price, (trade_ts, from_tail)) AS price,
                   max(trade_ts) AS trade_ts
            FROM (
                SELECT symbol, price, trade_ts, false AS from_tail FROM latest
                UNION ALL
                SELECT symbol, close, last_ts, true FROM tail_bars
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
    tiles["sparkline"] = tiles["sparkline"].map(thinned)
    return tiles


def thinned(closes: list[float], points: int = SPARKLINE_POINTS) -> list[float]:
    """Every n-th close and the last one, about ``points`` in all."""
    values = [float(close) for close in closes]  # numpy scalars are slow to write as text
    step = max(1, math.ceil(len(values) / points))
    kept = values[::step]
    if values and (len(values) - 1) % step:
        kept.append(values[-1])
    return kept


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
    """The most recent trades of one symbol in the lake tail, newest first.

    The tail's bars tell from which minute on the symbol has ``limit`` trades; passing that
    minute as a bound parameter lets DuckDB push ``trade_ts >= since`` into the Arrow scan,
    so the top-N sort sees a few hundred rows instead of the whole tail.
    """
    con = connection(snapshot)
    since = con.execute(
        """
        SELECT max(minute) FROM (
            SELECT minute, sum(trade_count) OVER (ORDER BY minute DESC) AS newer_trades
            FROM tail_bars
            WHERE symbol = $symbol
        )
        WHERE newer_trades >= $limit
        """,
        {"symbol": symbol, "limit": limit},
    ).fetchone()[0]
    return con.execute(
        """
        SELECT trade_ts, symbol, price, volume, trade_value, conditions,
               epoch_ms(processed_ts) - epoch_ms(ingest_ts) AS latency_ms,
               kafka_partition, kafka_offset
        FROM tail
        WHERE symbol = $symbol AND trade_ts >= coalesce($since, '-infinity'::TIMESTAMPTZ)
        ORDER BY trade_ts DESC, kafka_partition DESC, kafka_offset DESC
        LIMIT $limit
        """,
        {"symbol": symbol, "limit": limit, "since": since},
    ).df()


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
