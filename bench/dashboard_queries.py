"""Benchmark of the dashboard's reads over one day of 10 million trades.

Generates 24 hours of trades ending now (7 symbols, vectorized), writes them to the
object store twice under a unique prefix: compacted (one ``compacted-upto-<id>.parquet``
per partition) and raw (one ``batch-<id>.parquet`` per symbol and 5 s micro-batch, as the
Spark sink writes them), builds the summaries with DuckDB, then times:

* every query the page runs (``streamlit_app.analytics``), p50/p95 over repeats;
* the snapshot I/O (summaries + lake tail, cold and warm);
* a full page render through Streamlit's AppTest;
* the same lake reads over the raw layout, as ratios.

Usage (against the test MinIO the test suite starts):

    S3_ENDPOINT_URL=http://127.0.0.1:19000 .venv/bin/python bench/dashboard_queries.py

Prints one line per figure; ``--keep`` leaves the objects in place.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime as dt
import importlib.util
import io
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from finpipe import contracts, summaries
from finpipe.lake import lake_dataset
from finpipe.settings import DEFAULT_TICKERS, Settings, load_settings
from streamlit_app import analytics
from streamlit_app.lake_tail import RELIST_SECONDS, TAIL_COLUMNS, LakeTail, s3_client
from streamlit_app.store import Store
from streamlit_app.windows import WindowChoice, resolve

ROOT = Path(__file__).resolve().parents[1]
BASE_PRICES = (65000.0, 3400.0, 150.0, 190.0, 420.0, 180.0, 120.0)
MS_PER_DAY = 86_400_000


# --- data --------------------------------------------------------------------------------


def generate(trades: int, end: dt.datetime, symbols: tuple[str, ...], seed: int = 7) -> pa.Table:
    """``trades`` trades over the 24 h before ``end``, sorted by time, LAKE_SCHEMA."""
    rng = np.random.default_rng(seed)
    end_ms = int(end.timestamp() * 1000)
    ts = np.sort(rng.integers(end_ms - MS_PER_DAY, end_ms, trades))
    symbol_idx = rng.choice(len(symbols), trades, p=_weights(len(symbols)))
    price = np.empty(trades)
    for i in range(len(symbols)):
        mask = symbol_idx == i
        steps = rng.normal(0, 0.0004, mask.sum())
        price[mask] = BASE_PRICES[i % len(BASE_PRICES)] * np.exp(np.cumsum(steps))
    volume = np.round(rng.lognormal(0, 1, trades), 6)
    ingest = ts + rng.integers(2, 40, trades)
    batch_ms = 5_000
    processed = (ingest // batch_ms + 1) * batch_ms + rng.integers(200, 900, trades)
    partition = (symbol_idx % 3).astype(np.int32)
    offset = np.zeros(trades, dtype=np.int64)
    for p in range(3):
        mask = partition == p
        offset[mask] = np.arange(mask.sum())
    names = pa.array(symbols, pa.string())
    as_ts = lambda ms: pa.array(ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))  # noqa: E731
    table = pa.table(
        {
            "symbol": pc.take(names, pa.array(symbol_idx)),
            "price": price,
            "volume": volume,
            "trade_value": price * volume,
            "trade_ts": as_ts(ts),
            "ingest_ts": as_ts(ingest),
            "processed_ts": as_ts(processed),
            "conditions": pa.nulls(trades, pa.list_(pa.string())),
            "kafka_partition": partition,
            "kafka_offset": offset,
            "trade_date": pa.array(ts, pa.int64()).cast(pa.timestamp("ms")).cast(pa.date32()),
        }
    )
    return table.cast(contracts.LAKE_SCHEMA)


def _weights(n: int) -> np.ndarray:
    raw = np.array([3.0, 2.0, 1.5] + [1.0] * (n - 3))[:n]
    return raw / raw.sum()


def partitions(table: pa.Table) -> dict[tuple[dt.date, str], pa.Table]:
    con = duckdb.connect()
    con.register("trades", table)
    keys = con.execute("SELECT DISTINCT trade_date, symbol FROM trades ORDER BY ALL").fetchall()
    out = {}
    for day, symbol in keys:
        mask = pc.and_(
            pc.equal(table["trade_date"], pa.scalar(day, pa.date32())),
            pc.equal(table["symbol"], symbol),
        )
        out[(day, symbol)] = table.filter(mask)
    return out


def put_all(
    settings: Settings,
    objects: list[tuple[str, pa.Table]],
    threads: int = 16,
    local: pafs.FileSystem | None = None,
) -> None:
    """PUT each object on the store, or write it under ``local`` (bucket/key)."""
    client = s3_client(settings) if local is None else None

    def put(item: tuple[str, pa.Table]) -> None:
        buffer = io.BytesIO()
        pq.write_table(item[1], buffer, compression="zstd", row_group_size=131_072)
        if local is not None:
            path = f"{settings.s3_bucket}/{item[0]}"
            local.create_dir(path.rsplit("/", 1)[0])
            with local.open_output_stream(path) as out:
                out.write(buffer.getvalue())
        else:
            client.put_object(Bucket=settings.s3_bucket, Key=item[0], Body=buffer.getvalue())

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, objects))


def write_compacted(
    settings: Settings,
    parts: dict[tuple[dt.date, str], pa.Table],
    local: pafs.FileSystem | None = None,
) -> None:
    put_all(
        settings,
        [
            (
                f"{settings.lake_prefix}/{contracts.partition_dir(day.isoformat(), symbol)}/"
                f"{contracts.compacted_file_name(last_batch_id(part))}",
                part,
            )
            for (day, symbol), part in parts.items()
        ],
        local=local,
    )


def last_batch_id(part: pa.Table) -> int:
    """The raw layout's batch id of the partition's last row (see ``write_raw``)."""
    newest = pc.max(part["processed_ts"].cast(pa.int64())).as_py()
    return (newest or 0) // 5_000


def write_raw(
    settings: Settings,
    parts: dict[tuple[dt.date, str], pa.Table],
    local: pafs.FileSystem | None = None,
) -> int:
    """One object per 5 s micro-batch (batch id = processed_ts // 5 s) and partition."""
    objects = []
    for (day, symbol), part in parts.items():
        if part.num_rows == 0:
            continue
        ordered = part.sort_by("processed_ts")
        batch = pc.divide(
            ordered["processed_ts"].cast(pa.int64()), pa.scalar(5_000, pa.int64())
        ).to_numpy()
        starts = np.flatnonzero(np.r_[True, batch[1:] != batch[:-1]])
        bounds = np.r_[starts, len(batch)]
        folder = f"{settings.lake_prefix}/{contracts.partition_dir(day.isoformat(), symbol)}"
        for lo, hi in itertools.pairwise(bounds):
            name = contracts.batch_file_name(int(batch[lo]))
            objects.append((f"{folder}/{name}", ordered.slice(lo, hi - lo)))
    put_all(settings, objects, threads=4 if local else 24, local=local)
    return len(objects)


SUMMARY_SQL = {
    summaries.OHLCV_1M: """
        SELECT trade_date, symbol, time_bucket(INTERVAL 1 minute, trade_ts) AS minute,
            arg_min(price, (trade_ts, kafka_partition, kafka_offset)) AS open,
            max(price) AS high, min(price) AS low,
            arg_max(price, (trade_ts, kafka_partition, kafka_offset)) AS close,
            sum(volume) AS volume, sum(trade_value) AS trade_value, count(*) AS trade_count,
            sum(trade_value) / sum(volume) AS vwap
        FROM lake WHERE trade_date = $day GROUP BY ALL ORDER BY symbol, minute""",
    summaries.DAILY_SYMBOL_STATS: """
        WITH m AS (
            SELECT symbol, time_bucket(INTERVAL 1 minute, trade_ts) AS minute,
                   arg_max(price, trade_ts) AS close
            FROM lake WHERE trade_date = $day GROUP BY ALL),
        rets AS (SELECT symbol,
                ln(close / lag(close) OVER (PARTITION BY symbol ORDER BY minute)) AS ret FROM m),
        r AS (SELECT symbol, stddev_samp(ret) AS rv FROM rets GROUP BY symbol)
        SELECT $day AS trade_date, symbol, arg_min(price, trade_ts) AS open, max(price) AS high,
            min(price) AS low, arg_max(price, trade_ts) AS close, sum(volume) AS volume,
            sum(trade_value) AS traded_value, count(*) AS trade_count,
            sum(trade_value) / sum(volume) AS vwap, max(price) - min(price) AS high_low_range,
            any_value(r.rv) AS realized_volatility, min(trade_ts) AS first_trade_ts,
            max(trade_ts) AS last_trade_ts
        FROM lake JOIN r USING (symbol) WHERE trade_date = $day GROUP BY symbol""",
    summaries.LATEST_PRICES: """
        SELECT $day AS trade_date, symbol, arg_max(price, trade_ts) AS price,
            arg_max(volume, trade_ts) AS volume, max(trade_ts) AS trade_ts,
            date_trunc('second', now()) AS computed_ts
        FROM lake WHERE trade_date = $day GROUP BY symbol""",
}


def build_summaries(settings: Settings, table: pa.Table) -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("lake", table)
    days = sorted({d for d in table["trade_date"].unique().to_pylist()})
    source = summaries.LakeState(settings.lake_uri)  # the lake's rows, in memory: no batch ids
    for day in days:
        for name, sql in SUMMARY_SQL.items():
            result = con.execute(sql, {"day": day}).to_arrow_table()
            rows = pa.Table.from_batches(result.to_batches())
            summaries.publish(settings, name, day, rows, source=source)


# --- timing ------------------------------------------------------------------------------


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return _percentiles(samples)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples), p95


def report(name: str, p50: float, p95: float, target: float | None = None) -> None:
    verdict = "" if target is None else ("  ok" if p95 <= target else f"  OVER {target:g} ms")
    print(f"{name:<48} p50 {p50:9.1f} ms   p95 {p95:9.1f} ms{verdict}", flush=True)


def once(name: str, fn: Callable[[], object]) -> object:
    start = time.perf_counter()
    result = fn()
    print(f"{name:<48} {(time.perf_counter() - start) * 1000:9.1f} ms", flush=True)
    return result


def load_baseline(rev: str, module: str = "analytics") -> ModuleType:
    """``streamlit_app/<module>.py`` as of git revision ``rev``, importable next to the
    current one, so both are timed on the same snapshot in the same run."""
    source = subprocess.run(
        ["git", "show", f"{rev}:streamlit_app/{module}.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="bench-baseline-")) / f"baseline_{module}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"baseline_{module}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def timed_pair(
    current: Callable[[], object], baseline: Callable[[], object], repeats: int
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(p50, p95, median CPU ms) of both, alternating one call of each so both see the
    same load. CPU time is the process's (all DuckDB threads): unlike wall time it hardly
    depends on what else the machine runs."""
    wall: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for i, fn in enumerate((current, baseline)):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[i].append((time.perf_counter() - start) * 1000)
            cpu[i].append((time.process_time() - start_cpu) * 1000)
    return (
        (*_percentiles(wall[0]), statistics.median(cpu[0])),
        (*_percentiles(wall[1]), statistics.median(cpu[1])),
    )


def report_pair(
    name: str,
    current: tuple[float, float, float],
    baseline: tuple[float, float, float],
    target: float | None,
) -> None:
    (c50, c95, ccpu), (b50, b95, bcpu) = current, baseline
    verdict = "" if target is None else ("  ok" if c95 <= target else f"  OVER {target:g} ms")
    print(
        f"{name:<44} p50 {c50:7.1f} p95 {c95:7.1f} cpu {ccpu:6.1f} | baseline p50 {b50:7.1f} "
        f"p95 {b95:7.1f} cpu {bcpu:6.1f} | p50 x{b50 / c50:4.1f} cpu x{bcpu / ccpu:4.1f} (ms)"
        f"{verdict}",
        flush=True,
    )


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min)"


def page_queries(
    store: Store,
    now: dt.datetime,
    repeats: int,
    baseline: ModuleType | None = None,
    symbols: tuple[str, ...] = DEFAULT_TICKERS,
) -> None:
    symbols = list(symbols)
    windows = {c: resolve(c, now, now.date() - dt.timedelta(days=1)) for c in WindowChoice}
    days = sorted({d for w in windows.values() for d in w.days})
    snap = store.snapshot(days, now)
    print(f"snapshot: tail {snap.tail.num_rows:,} rows, ohlcv {snap.ohlcv.num_rows:,} rows")
    print(load(), flush=True)
    report("snapshot I/O, warm (summaries + tail)", *timed(lambda: store.snapshot(days, now), 10))
    old_snap = dataclasses.replace(snap, connection=None)
    modules = {"current": (analytics, snap)}
    if baseline is not None:
        modules["baseline"] = (baseline, old_snap)

    def connect(which: str) -> Callable[[], object]:
        module, s = modules[which]

        def run() -> object:
            s.connection = None
            return module.connection(s)

        return run

    def refresh(which: str) -> Callable[[], object]:
        """Everything the page queries in one refresh (window "Last 15 min"), from a new
        snapshot connection: what a user waits for, besides the I/O and the rendering."""
        module, s = modules[which]
        window = windows[WindowChoice.LAST_15_MIN]

        def run() -> object:
            s.connection = None
            module.lake_freshness(s)
            module.end_to_end_latency(s)
            module.symbols_present(s)
            module.price_tiles(s, symbols)
            module.candles(s, symbols[0], window)
            module.trade_tape(s, symbols[0])
            module.daily_stats(s, now.date())
            return module.normalized_prices(s, symbols[:4], window)

        return run

    def query(name: str) -> Callable[[str], Callable[[], object]]:
        def bind(which: str) -> Callable[[], object]:
            module, s = modules[which]
            return lambda: queries[name](module, s)

        return bind

    queries: dict[str, Callable[[ModuleType, object], object]] = {
        "lake_freshness": lambda m, s: m.lake_freshness(s),
        "end_to_end_latency": lambda m, s: m.end_to_end_latency(s),
        "symbols_present": lambda m, s: m.symbols_present(s),
        f"price_tiles ({len(symbols)} symbols)": lambda m, s: m.price_tiles(s, symbols),
        "trade_tape": lambda m, s: m.trade_tape(s, symbols[0]),
        "daily_stats": lambda m, s: m.daily_stats(s, now.date()),
    }
    for choice, window in windows.items():
        queries[f"candles ({choice.value})"] = lambda m, s, w=window: m.candles(s, symbols[0], w)
        queries[f"normalized_prices 4 symbols ({choice.value})"] = lambda m, s, w=window: (
            m.normalized_prices(s, symbols[:4], w)
        )
    # Warm both connections once: the queries below run on the snapshot's connection, as
    # the page runs all its queries of one refresh on one connection.
    for module, s in modules.values():
        module.connection(s)
    measured: list[tuple[str, Callable[[str], Callable[[], object]], float | None]] = [
        ("snapshot connection (once per refresh)", connect, None),
        *((name, query(name), 50.0) for name in queries),
        ("all queries of one refresh, new connection", refresh, None),
    ]
    for name, make, target in measured:
        if baseline is None:
            report(name, *timed(make("current"), repeats), target=target)
            continue
        report_pair(name, *timed_pair(make("current"), make("baseline"), repeats), target)
    print(load(), flush=True)


def page_render(settings: Settings, repeats: int, baseline: ModuleType | None = None) -> None:
    from streamlit.testing.v1 import AppTest

    os.environ.update(
        LAKE_PREFIX=settings.lake_prefix,
        SUMMARIES_PREFIX=settings.summaries_prefix,
        S3_ENDPOINT_URL=settings.s3_endpoint_url,
    )

    def render() -> None:
        page = AppTest.from_file(str(ROOT / "streamlit_app" / "app.py"), default_timeout=120)
        page.run()
        assert not page.exception, page.exception
        assert page.get("plotly_chart"), "the page rendered no chart"

    once("page render via AppTest, cold process caches", render)
    if baseline is None:
        report("page render via AppTest, warm", *timed(render, repeats), target=2000)
        return

    def render_baseline() -> None:
        """The same page (current app.py) running the baseline's queries."""
        import streamlit_app

        current = sys.modules["streamlit_app.analytics"]
        sys.modules["streamlit_app.analytics"] = streamlit_app.analytics = baseline
        try:
            render()
        finally:
            sys.modules["streamlit_app.analytics"] = streamlit_app.analytics = current

    pair = timed_pair(render, render_baseline, repeats)
    report_pair("page render via AppTest, warm", *pair, target=2000)


def lake_reads(
    compacted: Settings, raw: Settings, now: dt.datetime, repeats: int, local: pafs.FileSystem
) -> None:
    """The same lake reads over both layouts (on local disk: see the module docstring)."""
    cutoff = pa.scalar(now - dt.timedelta(minutes=15), pa.timestamp("ms", tz="UTC"))
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for label, settings in (("compacted", compacted), ("raw", raw)):
        fs = local
        days = [now.date()]
        res = results.setdefault(label, {})
        res["list partitions + open dataset (today)"] = timed(
            lambda s=settings, f=fs, d=days: lake_dataset(s, d, filesystem=f), 1
        )
        dataset = lake_dataset(settings, days, filesystem=fs)
        res["tail via lake_dataset, 15 min pushdown"] = timed(
            lambda d=dataset: d.to_table(
                columns=TAIL_COLUMNS, filter=ds.field("trade_ts") >= cutoff
            ),
            max(1, repeats // 10) if label == "raw" else 3,
        )
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("lake", dataset)
        res["count(*) today"] = timed(
            lambda c=con: c.execute("SELECT count(*) FROM lake").fetchall(), 1
        )
        res["1-min OHLCV of one symbol, today"] = timed(
            lambda c=con: c.execute(
                "SELECT time_bucket(INTERVAL 1 minute, trade_ts) m, min(price), max(price), "
                "sum(volume) FROM lake WHERE symbol = $s GROUP BY m",
                {"s": DEFAULT_TICKERS[0]},
            ).fetchall(),
            1,
        )
    for name in results["compacted"]:
        c, r = results["compacted"][name], results["raw"][name]
        print(
            f"lake {name:<43} compacted {c[1]:9.1f} ms   raw {r[1]:9.1f} ms   "
            f"raw/compacted {r[1] / c[1]:6.1f}x",
            flush=True,
        )


def lake_tail_raw(
    raw: Settings,
    parts: dict[tuple[dt.date, str], pa.Table],
    now: dt.datetime,
    baseline: ModuleType | None = None,
) -> None:
    """The dashboard's incremental tail over raw micro-batches on the store: the last
    15 minutes of the day as objects (cold read), then one new micro-batch (a refresh)."""
    cutoff = pa.scalar(now - dt.timedelta(minutes=15), pa.timestamp("ms", tz="UTC"))
    recent = {k: t.filter(pc.greater_equal(t["trade_ts"], cutoff)) for k, t in parts.items()}
    count = once("write last 15 min as raw objects on the store", lambda: write_raw(raw, recent))
    print(f"  raw objects: {count:,}")
    tail = LakeTail(raw)
    first = once(
        "LakeTail cold: list + read the 15 min", lambda: tail.read(dt.datetime.now(dt.UTC))
    )
    print(f"  ({first.num_rows:,} rows)")
    # All objects were just written; LakeTail relists objects younger than RELIST_SECONDS
    # on every refresh, which a steady stream never has more than ~30 s of. Let them age
    # so the refreshes below list what a running pipeline's refresh lists.
    time.sleep(RELIST_SECONDS + 1)
    tail.read(dt.datetime.now(dt.UTC))
    batch_ts = dt.datetime.now(dt.UTC)
    rows = len(DEFAULT_TICKERS)
    new_batch = pa.table(
        {
            "symbol": list(DEFAULT_TICKERS),
            "price": BASE_PRICES[:rows],
            "volume": [1.0] * rows,
            "trade_value": BASE_PRICES[:rows],
            "trade_ts": [batch_ts] * rows,
            "ingest_ts": [batch_ts] * rows,
            "processed_ts": [batch_ts + dt.timedelta(seconds=1)] * rows,
            "conditions": [None] * rows,
            "kafka_partition": [0] * rows,
            "kafka_offset": list(range(rows)),
            "trade_date": [batch_ts.date()] * rows,
        },
        schema=contracts.LAKE_SCHEMA,
    )
    write_raw(raw, partitions(new_batch))
    once("LakeTail refresh: one new micro-batch", lambda: tail.read(dt.datetime.now(dt.UTC)))
    if baseline is None:
        refresh = timed(lambda: tail.read(dt.datetime.now(dt.UTC)), 20)
        report("LakeTail refresh, nothing new", *refresh)
        return
    old = baseline.LakeTail(raw)
    old.read(dt.datetime.now(dt.UTC))
    pair = timed_pair(
        lambda: tail.read(dt.datetime.now(dt.UTC)), lambda: old.read(dt.datetime.now(dt.UTC)), 20
    )
    report_pair("LakeTail refresh, nothing new", *pair, target=None)


# --- 50 symbols at the end of a busy day: the first load of a fresh process -------------


def put_batches(
    settings: Settings, symbols: tuple[str, ...], batch_ids: range, now: dt.datetime
) -> int:
    """One small object per symbol and batch id, in today's folders, as the Spark sink
    names them (rows: one trade each, ``now``-relative times)."""
    day = now.date()
    objects = []
    for batch_id in batch_ids:
        rows = len(symbols)
        ts = now - dt.timedelta(seconds=30)
        table = pa.table(
            {
                "symbol": list(symbols),
                "price": [BASE_PRICES[i % len(BASE_PRICES)] for i in range(rows)],
                "volume": [1.0] * rows,
                "trade_value": [BASE_PRICES[i % len(BASE_PRICES)] for i in range(rows)],
                "trade_ts": [ts] * rows,
                "ingest_ts": [ts] * rows,
                "processed_ts": [ts + dt.timedelta(seconds=1)] * rows,
                "conditions": [None] * rows,
                "kafka_partition": [i % 3 for i in range(rows)],
                "kafka_offset": [batch_id * rows + i for i in range(rows)],
                "trade_date": [day] * rows,
            },
            schema=contracts.LAKE_SCHEMA,
        )
        for i, symbol in enumerate(symbols):
            folder = f"{settings.lake_prefix}/{contracts.partition_dir(day.isoformat(), symbol)}"
            objects.append((f"{folder}/{contracts.batch_file_name(batch_id)}", table.slice(i, 1)))
    put_all(settings, objects, threads=24)
    return len(objects)


# ROLLING_COMPACTION_SEGMENT_BATCHES' default: an hour of 5 s batches
SEGMENT_BATCHES = Settings.model_fields["rolling_compaction_segment_batches"].default


def rolling_segments(
    settings: Settings,
    table: pa.Table,
    symbols: tuple[str, ...],
    day: dt.date,
    hours: range,
    open_batches: int = 0,
) -> list[tuple[str, pa.Table]]:
    """The compacted segments a rolling-compacted open day holds, one per symbol and hour
    of ``table`` (24 hours): hour ``k`` is ``compacted-<k*720+1>-<(k+1)*720>``; with
    ``open_batches`` the last hour is the open segment, of that many batches. Rows keep
    their times; the folder is ``day``'s (the tail reads by time, not by ``trade_date``)."""
    ts = table["trade_ts"].cast(pa.int64()).to_numpy()
    hour_of = (ts - ts.min()) // 3_600_000
    objects = []
    for k in hours:
        last = (k + 1) * SEGMENT_BATCHES if not open_batches else k * SEGMENT_BATCHES + open_batches
        name = contracts.compacted_segment_name(k * SEGMENT_BATCHES + 1, last)
        in_hour = table.filter(pa.array(hour_of == k))
        for symbol in symbols:
            rows = in_hour.filter(pc.equal(in_hour["symbol"], symbol)).sort_by(
                [("trade_ts", "ascending"), ("kafka_offset", "ascending")]
            )
            rows = rows.set_column(
                rows.schema.get_field_index("trade_date"),
                "trade_date",
                pa.array([day] * rows.num_rows, pa.date32()),
            )
            folder = f"{settings.lake_prefix}/{contracts.partition_dir(day.isoformat(), symbol)}"
            objects.append((f"{folder}/{name}", rows))
    return objects


def first_load_fifty(
    base: Settings,
    root: str,
    old_batches: int,
    recent_batches: int,
    trades: int,
    repeats: int,
    tail_baseline: ModuleType | None,
    rolling: bool = False,
    first_loads: int = 1,
) -> None:
    """A fresh process's first page load and the warm refreshes with 50 symbols, over an
    open day holding ``old_batches`` batch objects per symbol before the tail's window
    and ``recent_batches`` inside it; the baseline's LakeTail on the same objects.

    ``rolling``: the day as the rolling compaction keeps it at 23:59 instead: per symbol
    23 hour segments written before the window, the open segment (the last hour but its
    ``recent_batches``) rewritten inside it, and the ``recent_batches`` young batch files
    (the default leaves (120 + 60) s / 5 s = 36).

    The objects' LastModified is the store's clock, so "old" objects are made old by
    reading at a later ``now``: the window is 1 minute (DASHBOARD_TAIL_MINUTES' least)
    and the tail's RECENT_SLACK is 0 here (the bench cannot wait minutes); with the
    default 5 minutes the first listing names 5 more minutes of objects per partition.
    """
    from producer.simulator.market import DEMO_50_TICKERS
    from streamlit_app import lake_tail

    symbols = DEMO_50_TICKERS
    settings = base.model_copy(
        update={
            "lake_prefix": f"{root}/fifty",
            "summaries_prefix": f"{root}/fifty-summaries",
            "dashboard_tail_minutes": 1,
        }
    )
    lake_tail.RECENT_SLACK = dt.timedelta(0)
    start = dt.datetime.now(dt.UTC)
    table = once(
        f"generate {trades:,} trades of 50 symbols (24 h)", lambda: generate(trades, start, symbols)
    )
    once(
        "build + publish summaries of 50 symbols (DuckDB)", lambda: build_summaries(settings, table)
    )
    first_recent = old_batches + 1
    if rolling:
        old = rolling_segments(settings, table, symbols, start.date(), range(23))
        once(
            f"PUT 23 hour segments x 50 symbols ({table.num_rows:,} trades in all)",
            lambda: put_all(settings, old, threads=16),
        )
        count = len(old)
        first_recent = 24 * SEGMENT_BATCHES - recent_batches + 1
    else:
        count = once(
            f"PUT {old_batches} old batches x 50 symbols",
            lambda: put_batches(settings, symbols, range(1, old_batches + 1), start),
        )
    print(f"  old objects: {count:,} (a full day at 5 s: {50 * 17_280:,}; {count / 864_000:.2%})")
    time.sleep(1.5)
    between = dt.datetime.now(dt.UTC)
    time.sleep(1.5)
    now = between + dt.timedelta(minutes=1) + lake_tail.CLOCK_SLACK
    if rolling:
        segments = rolling_segments(
            settings, table, symbols, start.date(), range(23, 24), SEGMENT_BATCHES - recent_batches
        )
        once("PUT the open segment x 50 symbols", lambda: put_all(settings, segments))
    recent = range(first_recent, first_recent + recent_batches)
    count = once(
        f"PUT {recent_batches} recent batches x 50 symbols",
        lambda: put_batches(settings, symbols, recent, now),
    )
    print(f"  recent objects: {count:,}" + (" + 50 open segments" if rolling else ""))
    print(load(), flush=True)

    def fresh(module: ModuleType) -> Store:
        return Store(settings, tail=module.LakeTail(settings))

    def listing(store: Store) -> dict[str, int]:
        """Keys and pages the tail's first load listed (a baseline before the tail
        counted its listings: botocore's hook, which sees only boto3's listings)."""
        stats = getattr(store.tail, "listed", None)
        if stats is not None:
            return {"keys": stats.keys, "requests": stats.listings}
        return dict(hooked[id(store.tail)])

    hooked: dict[int, dict[str, int]] = {}

    def hook(store: Store) -> Store:
        if getattr(store.tail, "listed", None) is None:
            counts = hooked[id(store.tail)] = {"keys": 0, "requests": 0}

            def count(parsed: dict, **_: object) -> None:
                counts["requests"] += 1
                counts["keys"] += len(parsed.get("Contents", []))

            store.tail._client.meta.events.register("after-call.s3.ListObjectsV2", count)
        return store

    def first_load(store: Store) -> object:
        snap = store.snapshot([now.date()], now)
        return page_refresh(snap, symbols, now)

    variants = [("current", lake_tail)] + ([("baseline", tail_baseline)] if tail_baseline else [])
    # Fresh stores in turn (current, baseline, current, ...): one sample each is noise.
    firsts: dict[str, list[float]] = {label: [] for label, _ in variants}
    warm: dict[str, Store] = {}
    lists: dict[str, dict[str, int]] = {}
    for _ in range(first_loads):
        for label, module in variants:
            store = hook(fresh(module))
            start_ms = time.perf_counter()
            first_load(store)
            firsts[label].append((time.perf_counter() - start_ms) * 1000)
            warm[label], lists[label] = store, listing(store)
    for label, _ in variants:
        samples = firsts[label]
        report(f"first load, fresh store ({label}), {len(samples)}x", *_percentiles(samples), 3000)
        print(f"  max {max(samples):.1f} ms; listed {lists[label]['keys']:,} keys in "
              f"{lists[label]['requests']:,} pages", flush=True)  # fmt: skip
    if tail_baseline:
        ratio = statistics.median(firsts["current"]) / statistics.median(firsts["baseline"])
        print(f"  first load current / baseline (p50): {ratio:.2f}")
    for label, _ in variants:
        store = warm[label]
        report(
            f"warm refresh ({label})", *timed(lambda s=store: first_load(s), repeats), target=3000
        )
    store = fresh(lake_tail)
    store.snapshot([now.date()], now)
    page_queries(store, now, repeats, symbols=symbols)


def page_refresh(snap: object, symbols: tuple[str, ...], now: dt.datetime) -> object:
    """Every query one refresh of the page runs, as the page runs them."""
    window = resolve(WindowChoice.LAST_15_MIN, now)
    analytics.lake_freshness(snap)
    analytics.end_to_end_latency(snap)
    analytics.symbols_present(snap)
    analytics.price_tiles(snap, list(symbols))
    analytics.candles(snap, symbols[0], window)
    analytics.trade_tape(snap, symbols[0])
    analytics.daily_stats(snap, now.date())
    return analytics.normalized_prices(snap, list(symbols[:4]), window)


def cleanup(settings: Settings, root: str) -> None:
    client = s3_client(settings)
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=settings.s3_bucket, Prefix=f"{root}/"):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=settings.s3_bucket, Delete={"Objects": keys})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="leave the objects in place")
    parser.add_argument("--skip-raw", action="store_true", help="compacted layout only")
    parser.add_argument(
        "--baseline",
        metavar="GIT_REV",
        help="also time streamlit_app/analytics.py of this revision, interleaved, same snapshot",
    )
    parser.add_argument("--skip-render", action="store_true", help="no AppTest page render")
    parser.add_argument(
        "--tail-only", action="store_true", help="only the LakeTail section over raw objects"
    )
    parser.add_argument(
        "--fifty",
        action="store_true",
        help="only the first load of a fresh process and warm refreshes with 50 symbols",
    )
    parser.add_argument("--old-batches", type=int, default=40, help="with --fifty")
    parser.add_argument("--recent-batches", type=int, default=6, help="with --fifty")
    parser.add_argument(
        "--rolling",
        action="store_true",
        help="with --fifty: the open day as the rolling compaction keeps it at 23:59",
    )
    parser.add_argument(
        "--first-loads",
        type=int,
        default=5,
        help="with --fifty: first loads of a fresh store per variant, interleaved",
    )
    args = parser.parse_args(argv)

    base = load_settings()
    baseline = load_baseline(args.baseline) if args.baseline else None
    tail_baseline = load_baseline(args.baseline, "lake_tail") if args.baseline else None
    root = f"bench-dashboard-{uuid.uuid4().hex[:8]}"

    def variant(lake: str) -> Settings:
        return base.model_copy(
            update={"lake_prefix": f"{root}/{lake}", "summaries_prefix": f"{root}/summaries"}
        )

    compacted, raw = variant("compacted"), variant("raw")
    local_dir = Path(tempfile.mkdtemp(prefix=f"{root}-"))
    local = pafs.SubTreeFileSystem(str(local_dir), pafs.LocalFileSystem())
    now = dt.datetime.now(dt.UTC)
    print(f"store {base.s3_endpoint_url} bucket {base.s3_bucket} prefix {root}/; local {local_dir}")
    print(f"{os.cpu_count()} cores; {load()}")
    try:
        if args.fifty:
            first_load_fifty(
                base,
                root,
                args.old_batches,
                args.recent_batches,
                args.trades,
                args.repeats,
                tail_baseline,
                rolling=args.rolling,
                first_loads=args.first_loads,
            )
            print(load(), flush=True)
            return 0
        table = once(
            f"generate {args.trades:,} trades (24 h to now)",
            lambda: generate(args.trades, now, DEFAULT_TICKERS),
        )
        parts = once("split into partitions", lambda: partitions(table))
        if args.tail_only:
            lake_tail_raw(raw, parts, now, tail_baseline)
            print(load(), flush=True)
            return 0
        once("write compacted lake on the store", lambda: write_compacted(compacted, parts))
        once("build + publish summaries (DuckDB)", lambda: build_summaries(compacted, table))
        store = Store(compacted)
        once("snapshot cold (summaries + tail)", lambda: store.snapshot([now.date()], now))
        page_queries(store, dt.datetime.now(dt.UTC), args.repeats, baseline)
        if not args.skip_render:
            page_render(compacted, max(5, args.repeats // 6), baseline)
            print(load(), flush=True)
        if not args.skip_raw:
            once(
                "write compacted lake on local disk",
                lambda: write_compacted(compacted, parts, local),
            )
            count = once("write raw lake on local disk", lambda: write_raw(raw, parts, local))
            print(f"  raw objects: {count:,}")
            lake_reads(compacted, raw, now, args.repeats, local)
            lake_tail_raw(raw, parts, now, tail_baseline)
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)
        if not args.keep:
            cleanup(base, root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
