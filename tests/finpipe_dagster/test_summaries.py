"""Summary assets materialized from a seeded lake on the real MinIO."""

import datetime as dt
import itertools
import json
import math
from collections import defaultdict

import pytest
from dagster import materialize
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from finpipe import summaries
from finpipe_dagster.definitions import defs

from .conftest import DAY, SeededLake

daily_summaries = defs.get_assets_def(summaries.OHLCV_1M)


def expected_bars(rows: list[dict]) -> dict[tuple[str, dt.datetime], dict]:
    groups: dict[tuple[str, dt.datetime], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["symbol"], row["trade_ts"].replace(second=0))].append(row)
    bars = {}
    for key, trades in groups.items():
        trades.sort(key=lambda r: (r["trade_ts"], r["kafka_offset"]))
        volume = sum(t["volume"] for t in trades)
        bars[key] = {
            "open": trades[0]["price"],
            "high": max(t["price"] for t in trades),
            "low": min(t["price"] for t in trades),
            "close": trades[-1]["price"],
            "volume": volume,
            "trade_count": len(trades),
            "vwap": sum(t["price"] * t["volume"] for t in trades) / volume,
        }
    return bars


def read(seeded: SeededLake, name: str, day: dt.date) -> list[dict]:
    return summaries.read(seeded.settings, name, [day]).to_pylist()


def test_summaries_match_independent_computation(seeded: SeededLake) -> None:
    seeded.write(seeded.trades(DAY, 300, seed=1))
    seeded.write(seeded.trades(DAY, 200, seed=2))  # a second batch: more files per partition
    result = materialize(
        [daily_summaries], partition_key=DAY.isoformat(), resources=seeded.resources
    )
    assert result.success

    # Each table's commit names the lake state the day was built from, as the
    # materialization does, and the materialization names the version it made.
    for event in result.asset_materializations_for_node("daily_summaries"):
        delta = summaries.open_table(seeded.settings, event.asset_key.to_user_string())
        assert delta is not None
        assert event.metadata["table_version"].value == delta.version()
        [commit] = delta.history(limit=1)
        assert commit[summaries.LAKE_KEY] == seeded.settings.lake_uri
        read_version = event.metadata["lake_version"].value[DAY.isoformat()]
        assert json.loads(commit[summaries.LAKE_VERSION_KEY]) == read_version
        assert read_version == seeded.table.open().version()  # type: ignore[union-attr]
        assert json.loads(commit[summaries.LAKE_ROWS_KEY]) == len(seeded.rows)

    bars = expected_bars(seeded.rows)
    got = read(seeded, summaries.OHLCV_1M, DAY)
    assert len(got) == len(bars)
    for bar in got:
        want = bars[(bar["symbol"], bar["minute"])]
        for column in ("open", "high", "low", "close", "trade_count"):
            assert bar[column] == want[column], (bar, column)
        assert bar["volume"] == pytest.approx(want["volume"])
        assert bar["vwap"] == pytest.approx(want["vwap"])

    stats = {s["symbol"]: s for s in read(seeded, summaries.DAILY_SYMBOL_STATS, DAY)}
    latest = {p["symbol"]: p for p in read(seeded, summaries.LATEST_PRICES, DAY)}
    for symbol in {r["symbol"] for r in seeded.rows}:
        trades = sorted(
            (r for r in seeded.rows if r["symbol"] == symbol),
            key=lambda r: (r["trade_ts"], r["kafka_offset"]),
        )
        closes = [b["close"] for (s, _), b in sorted(bars.items()) if s == symbol]
        returns = [math.log(b / a) for a, b in itertools.pairwise(closes)]
        s = stats[symbol]
        assert (s["open"], s["close"]) == (trades[0]["price"], trades[-1]["price"])
        assert s["high"] == max(t["price"] for t in trades)
        assert s["high_low_range"] == pytest.approx(s["high"] - min(t["price"] for t in trades))
        assert s["trade_count"] == len(trades)
        assert s["traded_value"] == pytest.approx(sum(t["trade_value"] for t in trades))
        assert s["vwap"] == pytest.approx(
            sum(t["price"] * t["volume"] for t in trades) / sum(t["volume"] for t in trades)
        )
        assert s["realized_volatility"] == pytest.approx(math.sqrt(sum(r * r for r in returns)))
        assert latest[symbol]["price"] == trades[-1]["price"]
        assert latest[symbol]["trade_ts"] == trades[-1]["trade_ts"]


def test_rematerializing_a_partition_is_identical(seeded: SeededLake) -> None:
    seeded.write(seeded.trades(DAY, 120, seed=3))
    for _ in range(2):
        assert materialize(
            [daily_summaries],
            partition_key=DAY.isoformat(),
            resources=seeded.resources,
            selection=[summaries.OHLCV_1M, summaries.DAILY_SYMBOL_STATS],
        ).success
        if _ == 0:
            first = (
                read(seeded, summaries.OHLCV_1M, DAY),
                read(seeded, summaries.DAILY_SYMBOL_STATS, DAY),
            )
    assert (
        read(seeded, summaries.OHLCV_1M, DAY),
        read(seeded, summaries.DAILY_SYMBOL_STATS, DAY),
    ) == first


def test_backfill_of_three_days_is_one_run(seeded: SeededLake) -> None:
    days = [DAY + dt.timedelta(days=i) for i in range(3)]
    for i, day in enumerate(days):
        seeded.write(seeded.trades(day, 50 + 10 * i, seed=10 + i))
    result = materialize(
        [daily_summaries],
        resources=seeded.resources,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: days[0].isoformat(),
            ASSET_PARTITION_RANGE_END_TAG: days[-1].isoformat(),
        },
    )
    assert result.success
    materializations = result.asset_materializations_for_node("daily_summaries")
    assert {m.partition for m in materializations} == {d.isoformat() for d in days}
    for i, day in enumerate(days):
        stats = read(seeded, summaries.DAILY_SYMBOL_STATS, day)
        assert sum(s["trade_count"] for s in stats) == 50 + 10 * i
        assert {s["trade_date"] for s in stats} == {day}
