"""The SQL of a 1-minute OHLCV bar, shared by the summaries and the dashboard's live minutes.

One definition, so a bar the dashboard computes from the lake's tail equals the bar the
``ohlcv_1m`` summary publishes for the same minute. Trades are ordered by trade time,
ties broken by Kafka partition, then offset (a symbol is a Kafka key, so its trades
share a partition and offsets order them as produced); open and close are the first and
last trade in that order.
"""

from __future__ import annotations

TRADE_ORDER = "trade_ts, kafka_partition, kafka_offset"
"""The order of trades (``ORDER BY`` list) for first/last over any span of time."""

# The same order inside one minute as one exact HUGEINT: ms-in-minute (16 bits) |
# partition + 2^31 (32) | offset + 2^63 (64). Comparing it orders trades exactly like
# TRADE_ORDER within a minute, for every int32 partition and int64 offset, and is cheaper
# to compare than the struct (figures: docs/benchmarks/dashboard.md).
TRADE_ORDER_IN_MINUTE = """(
    ((epoch_ms(trade_ts) % 60000)::HUGEINT << 96)
    | ((kafka_partition::HUGEINT + 2147483648) << 64)
    | (kafka_offset::HUGEINT + 9223372036854775808)
)"""


def ohlcv_1m_sql(
    source: str,
    keys: str,
    where: str = "TRUE",
    *,
    exact_sums: bool = False,
    extra: tuple[tuple[str, str], ...] = (),
) -> str:
    """1-minute bars of the trades in ``source``, grouped by ``keys`` and the minute.

    Columns: ``keys``, ``minute`` (UTC), open, high, low, close, volume, trade_value,
    trade_count, and ``last_ts`` (the bar's newest trade). The minute is computed on epoch
    milliseconds: the same as ``time_bucket(INTERVAL 1 minute, trade_ts)`` in UTC, without
    per-row time zone arithmetic. ``source`` and ``keys`` are SQL written by the caller,
    never user input; values go in ``where`` as bound parameters.

    ``exact_sums`` adds the volumes and values in trade order: a parallel sum of doubles
    depends on how rows reach the threads (its last bits vary between runs), a sum in a
    fixed order does not, so a bar rebuilt from the same trades is bit-for-bit the same.
    ``extra`` adds ``(aggregate SQL, column name)`` pairs to each bar.
    """
    order = f" ORDER BY {TRADE_ORDER}" if exact_sums else ""
    extra_inner = "".join(f"\n        {sql} AS {name}," for sql, name in extra)
    extra_outer = "".join(f", {name}" for _, name in extra)
    return f"""
SELECT
    {keys}, to_timestamp(minute_ms // 1000) AS minute,
    open, high, low, close, volume, trade_value, trade_count, last_ts{extra_outer}
FROM (
    SELECT
        {keys},
        epoch_ms(trade_ts) // 60000 * 60000 AS minute_ms,
        arg_min(price, {TRADE_ORDER_IN_MINUTE}) AS open,
        max(price) AS high,
        min(price) AS low,
        arg_max(price, {TRADE_ORDER_IN_MINUTE}) AS close,
        sum(volume{order}) AS volume,
        sum(trade_value{order}) AS trade_value,
        count(*) AS trade_count,{extra_inner}
        max(trade_ts) AS last_ts
    FROM {source}
    WHERE {where}
    GROUP BY ALL
)
"""
