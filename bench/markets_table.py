"""The markets table's HTML (``streamlit_app.charts.markets_table``) for 50 symbols as the
day fills: its size and the time to build it at 60, 360, 720 and 1,440 one-minute closes
per symbol (the sparklines), against the same function of a git revision in the same run.

The table is built and sent at every live refresh of every open page (once a second by
default) and parsed and sanitized by the browser each time, so its size at 23:59 is what
the page pays all day's end.

    .venv/bin/python bench/markets_table.py --baseline-rev 9425890
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import PIPE
from types import ModuleType

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = 50
CLOSES = (60, 360, 720, 1440)


def markets(closes: int, seed: int = 7) -> pd.DataFrame:
    """50 symbols with ``closes`` one-minute closes each, a random walk from 100."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(SYMBOLS):
        walk = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.0004, closes)))
        rows.append(
            {
                "symbol": f"SYM{i:02d}",
                "price": float(walk[-1]),
                "change_pct": float((walk[-1] / walk[0] - 1) * 100),
                "sparkline": walk,
                "trade_ts": pd.Timestamp("2026-12-05 23:59:00", tz="UTC"),
                "session_open": float(walk[0]),
            }
        )
    return pd.DataFrame(rows)


def charts_at(rev: str, into: Path) -> ModuleType:
    """``streamlit_app/charts.py`` as of ``rev``, imported under its own name; the modules it
    imports are this checkout's (``tables``, ``windows``: unchanged for this comparison)."""
    path = "streamlit_app/charts.py"
    archive = subprocess.run(["git", "archive", rev, path], cwd=ROOT, check=True, stdout=PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    spec = importlib.util.spec_from_file_location(f"charts_{rev}", into / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(build: Callable[[], str], repeats: int) -> tuple[float, int]:
    """(median milliseconds, bytes) of ``build``."""
    size = len(build())  # and warm
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        build()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples), size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-rev", metavar="GIT_REV", required=True)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from streamlit_app import charts

    folder = Path(tempfile.mkdtemp(prefix="markets-table-"))
    try:
        baseline = charts_at(args.baseline_rev, folder)
        print(f"| closes per symbol | this checkout: bytes, ms | {args.baseline_rev}: bytes, ms "
              "| ratio bytes, ms |")  # fmt: skip
        print("|---|---|---|---|")
        for closes in CLOSES:
            shown = markets(closes)
            ms, size = timed(lambda s=shown: charts.markets_table(s), args.repeats)
            base_ms, base_size = timed(lambda s=shown: baseline.markets_table(s), args.repeats)
            print(f"| {closes:,} | {size:,} B, {ms:.1f} ms | {base_size:,} B, {base_ms:.1f} ms "
                  f"| {size / base_size:.2f}, {ms / base_ms:.2f} |", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
