"""A replay corpus the drills write at their start, and the lake read back as trades.

Trade times run from the drill's start; every trade is unique by symbol, price, time and
volume (so a doubled row shows), crypto and stock symbols and one odd spelling (``BRK.B``)
are mixed, and a known number of malformed frames is spread over the file.
"""

from __future__ import annotations

import collections
import json
import random
from dataclasses import dataclass
from pathlib import Path

from finpipe import lake
from finpipe.settings import Settings

SYMBOLS = {"BINANCE:BTCUSDT": 97_000.0, "BINANCE:ETHUSDT": 3_400.0, "AAPL": 230.0, "BRK.B": 470.0}
CRYPTO = {"BINANCE:BTCUSDT", "BINANCE:ETHUSDT"}
TRADES_PER_FRAME = 8
FRAME_SECONDS = 0.25  # 32 trades/s
MALFORMED_FRAMES = 12

Trade = tuple[str, float, int, float]  # (symbol, price, trade time ms, volume)


@dataclass
class Corpus:
    path: Path
    trades: list[Trade]
    malformed: list[str]

    @property
    def items(self) -> int:
        """What the producer's ``received`` counts for the whole replay."""
        return len(self.trades) + len(self.malformed)


def malformed_frame(k: int) -> str:
    return [
        f"garbage frame {k}: not JSON {{",
        json.dumps({"type": "trade", "n": k}),  # a trade frame without its data list
        json.dumps([k, "not a frame"]),
        json.dumps({"type": f"mystery-{k}", "data": []}),
    ][k % 4]


def write_corpus(path: Path, seconds: float, start_ms: int) -> Corpus:
    """Trade frames every FRAME_SECONDS from ``start_ms``, malformed frames spread over it."""
    rng = random.Random(13)
    frames = int(seconds / FRAME_SECONDS)
    malformed_after = {
        int(frames * (k + 0.5) / MALFORMED_FRAMES): k for k in range(MALFORMED_FRAMES)
    }
    trades: list[Trade] = []
    malformed: list[str] = []
    names = list(SYMBOLS)
    with path.open("w") as out:
        for f in range(frames):
            base_ms = start_ms + int(f * FRAME_SECONDS * 1000)
            data = []
            for j in range(TRADES_PER_FRAME):
                n = len(trades)
                symbol = names[n % len(names)]
                price = round(SYMBOLS[symbol] * (1 + rng.uniform(-0.002, 0.002)), 2)
                volume = round(0.001 * (n + 1), 3)  # unique per trade
                trade = (symbol, price, base_ms + j, volume)
                trades.append(trade)
                data.append({"p": price, "s": symbol, "t": base_ms + j, "v": volume,
                             "c": None if symbol in CRYPTO else ["1", "12"]})  # fmt: skip
            out.write(json.dumps({"type": "trade", "data": data}) + "\n")
            if f in malformed_after:
                malformed.append(malformed_frame(malformed_after[f]))
                out.write(malformed[-1] + "\n")
    return Corpus(path, trades, malformed)


def lake_trades(settings: Settings) -> collections.Counter[Trade]:
    con = lake.duckdb_with_lake(settings)
    rows = con.execute(
        "SELECT symbol, price, epoch_ms(trade_ts), volume FROM processed_trades"
    ).fetchall()
    return collections.Counter((s, p, int(t), v) for s, p, t, v in rows)


@dataclass(frozen=True)
class LakeReconciliation:
    """The lake against a corpus, trade by trade (symbol, price, time, volume), and its
    rows against their Kafka coordinates."""

    replayed: int
    rows: int
    distinct_coordinates: int
    missing: int
    duplicated: int
    unexpected: int

    @property
    def exact(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected) and (
            self.rows == self.distinct_coordinates == self.replayed
        )

    def __str__(self) -> str:
        return (
            f"lake: {self.rows} rows ({self.distinct_coordinates} Kafka coordinates) for "
            f"{self.replayed} replayed trades; {self.missing} missing, {self.duplicated} "
            f"duplicated, {self.unexpected} unexpected"
        )


def reconcile_lake(settings: Settings, corpus: Corpus) -> LakeReconciliation:
    found = lake.read_reloading(lambda: lake_trades(settings))
    expected = collections.Counter(corpus.trades)
    assert max(expected.values()) == 1, "the corpus's trades are not unique"
    rows, distinct = (
        lake.duckdb_with_lake(settings)
        .execute(
            "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM processed_trades"
        )
        .fetchone()
    )
    return LakeReconciliation(
        replayed=len(corpus.trades),
        rows=rows,
        distinct_coordinates=distinct,
        missing=sum((expected - found).values()),
        duplicated=sum(n - 1 for n in found.values() if n > 1),
        unexpected=sum((found - expected).values()),
    )
