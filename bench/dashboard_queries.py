"""Benchmark of the dashboard's reads over one day of 10 million trades in the Delta lake.

Generates 24 hours of trades ending now (7 symbols, vectorized) and writes them to the
object store, under a unique prefix, as the lake table ``processed_trades`` the way the
platform produces it (``bench/lake_seed.py``): the last ``--replay-minutes`` as 5 s
micro-batches, each written by the streaming writer's code and committed with the query's
application transaction, with a ``lake_maintenance_job`` pass (open-day compaction, lite
vacuum, log cleanup) every 60 batches, placed so that the last one ran
``--recent-batches`` batches before now; the hours before are fast-forwarded (hour-sized
commits) and then maintained like the rest: yesterday z-ordered as ``compacted_trades``
does, today compacted. It builds the summaries with DuckDB (published as Delta tables),
then times:

* every query the page runs (``streamlit_app.analytics``), p50/p95 over repeats;
* the snapshot I/O (summaries + lake tail, cold and warm);
* a full page render through Streamlit's AppTest;
* the lake reads over today's snapshot (open, tail pushdown, count, OHLCV);
* the dashboard's ``LakeTail``: a fresh reader's first read, a refresh after one more
  micro-batch commit, a refresh with nothing new, a refresh after a maintenance run.

``--baseline GIT_REV`` also times ``streamlit_app/analytics.py`` of that revision on the
same snapshot, interleaved; ``--tail-baseline GIT_REV`` the ``LakeTail`` of a revision
(one that reads the Delta table: revisions before it read batch objects, which this
table does not have).

Usage (against the test MinIO the test suite starts):

    S3_ENDPOINT_URL=http://127.0.0.1:19000 .venv/bin/python bench/dashboard_queries.py

Prints one line per figure; ``--keep`` leaves the objects in place.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from lake_seed import MAINTENANCE_EVERY, TRIGGER_S, Seeder, cleanup, log_size

from finpipe import contracts, lake, summaries
from finpipe.lake import lake_dataset
from finpipe.logs import configure_logging
from finpipe.settings import DEFAULT_TICKERS, Settings, load_settings
from finpipe_dagster.summaries import sql as summary_sql
from streamlit_app import analytics
from streamlit_app.lake_tail import TAIL_COLUMNS, LakeTail
from streamlit_app.store import Store
from streamlit_app.windows import WindowChoice, resolve

ROOT = Path(__file__).resolve().parents[1]
BASE_PRICES = (65000.0, 3400.0, 150.0, 190.0, 420.0, 180.0, 120.0)
MS_PER_DAY = 86_400_000
HOUR_BATCHES = 3600 // TRIGGER_S
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


def _batches(rows: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """``rows`` in micro-batch order, and each row's batch id (``processed_ts`` // 5 s,
    the batch that wrote it)."""
    batch = rows["processed_ts"].cast(pa.int64()).to_numpy() // (TRIGGER_S * 1_000_000)
    order = np.argsort(batch, kind="stable")
    return rows.take(pa.array(order)), batch[order]


def _runs(batch: np.ndarray, stop: int) -> Iterator[tuple[int, int, int]]:
    """(batch id, first row, end row) of each batch id below ``stop`` in sorted ``batch``."""
    end = int(np.searchsorted(batch, stop))
    if end == 0:
        return
    starts = np.flatnonzero(np.r_[True, batch[1:end] != batch[: end - 1]])
    bounds = np.r_[starts, end]
    for lo, hi in itertools.pairwise(bounds):
        yield int(batch[lo]), int(lo), int(hi)


def seed_lake(
    settings: Settings, rows: pa.Table, replay_minutes: int, recent_batches: int
) -> Seeder:
    """``rows`` as the lake table the platform leaves: micro-batches of the last
    ``replay_minutes``, a maintenance run every 60 batches (the last one
    ``recent_batches`` batches before the newest batch), the hours before fast-forwarded
    and maintained (closed days z-ordered, today compacted)."""
    if not 0 <= recent_batches < MAINTENANCE_EVERY:
        raise SystemExit(f"--recent-batches must be 0..{MAINTENANCE_EVERY - 1}")
    seeder = Seeder(settings)
    ordered, batch = _batches(rows)
    last = int(batch[-1])
    phase = (last - recent_batches) % MAINTENANCE_EVERY  # maintenance after these batches
    start = last - replay_minutes * 60 // TRIGGER_S
    start -= (start - 1 - phase) % MAINTENANCE_EVERY  # the fast-forward ends at a maintenance
    today = dt.datetime.fromtimestamp(last * TRIGGER_S, dt.UTC).date()
    hours: dict[int, tuple[int, int, int]] = {}
    for batch_id, lo, hi in _runs(batch, start):
        first = hours.get(batch_id // HOUR_BATCHES, (batch_id, lo, hi))
        hours[batch_id // HOUR_BATCHES] = (batch_id, first[1], hi)
    seeder.fast_forward((b, ordered.slice(lo, hi - lo)) for b, lo, hi in hours.values())
    if hours:
        days = pc.unique(ordered.slice(0, hours[max(hours)][2])["trade_date"]).to_pylist()
        for day in sorted(d for d in days if d < today):
            seeder.close_day(day)
        seeder.maintain(today)
    first_replayed = int(np.searchsorted(batch, start))
    ahead, ahead_batch = ordered.slice(first_replayed), batch[first_replayed:]
    for batch_id, lo, hi in _runs(ahead_batch, last + 1):
        seeder.batch(ahead.slice(lo, hi - lo), batch_id)
        if (batch_id - phase) % MAINTENANCE_EVERY == 0:
            seeder.maintain(today)
    return seeder


def seeded(name: str, seeder: Seeder) -> None:
    log = log_size(seeder.settings, seeder.table)
    print(
        f"  {name}: table v{seeder.version}, {seeder.commits} commits "
        f"({seeder.files} files), {seeder.maintenance_runs} maintenance runs, "
        f"{len(lake.table_files(seeder.table.open()))} live files; log {log['json']} entries, "
        f"newest checkpoint {log['newest_checkpoint_bytes'] / 1e3:.0f} kB",
        flush=True,
    )


def build_summaries(
    settings: Settings, table: pa.Table, computed_at: dt.datetime | None = None
) -> None:
    """Publish the summaries of every day of ``table`` with the platform's own SQL
    (``finpipe_dagster.summaries.sql``); ``computed_at``: the latest prices' computed time
    (default now: a benchmark that moves the clock passes its moment)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("processed_trades", table)
    days = sorted({d for d in table["trade_date"].unique().to_pylist()})
    source = summaries.LakeState(settings.lake_uri)  # the lake's rows, in memory: no batch ids
    at = computed_at or dt.datetime.now(dt.UTC)
    for day in days:
        built = {
            summaries.OHLCV_1M: summary_sql.ohlcv_1m(con, day),
            summaries.DAILY_SYMBOL_STATS: summary_sql.daily_symbol_stats(con, day),
            summaries.LATEST_PRICES: summary_sql.latest_prices(con, day, at),
        }
        for name, rows in built.items():
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


def lake_reads(settings: Settings, now: dt.datetime, repeats: int) -> None:
    """Today's lake reads over the newest snapshot on the store."""
    cutoff = pa.scalar(now - dt.timedelta(minutes=15), contracts.LAKE_TS)
    days = [now.date()]
    table = lake.trades_table(settings)
    report("lake: open the table (newest snapshot)", *timed(table.open, max(3, repeats // 3)))
    report(
        "lake: open + dataset of today",
        *timed(lambda: lake_dataset(settings, days), max(3, repeats // 3)),
    )
    dataset = lake_dataset(settings, days)
    print(f"  today: {sum(1 for _ in dataset.get_fragments())} files", flush=True)
    report(
        "lake: tail via lake_dataset, 15 min pushdown",
        *timed(
            lambda: dataset.to_table(columns=TAIL_COLUMNS, filter=ds.field("trade_ts") >= cutoff),
            3,
        ),
    )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("lake", dataset)
    report(
        "lake: count(*) today",
        *timed(lambda: con.execute("SELECT count(*) FROM lake").fetchall(), 3),
    )
    report(
        "lake: 1-min OHLCV of one symbol, today",
        *timed(
            lambda: con.execute(
                "SELECT time_bucket(INTERVAL 1 minute, trade_ts) m, min(price), max(price), "
                "sum(volume) FROM lake WHERE symbol = $s GROUP BY m",
                {"s": DEFAULT_TICKERS[0]},
            ).fetchall(),
            3,
        ),
    )
    con.close()


def one_batch(symbols: tuple[str, ...], at: dt.datetime, offset: int) -> pa.Table:
    """One trade per symbol at ``at``, as a micro-batch holds them (LAKE_SCHEMA)."""
    rows = len(symbols)
    return pa.table(
        {
            "symbol": list(symbols),
            "price": [BASE_PRICES[i % len(BASE_PRICES)] for i in range(rows)],
            "volume": [1.0] * rows,
            "trade_value": [BASE_PRICES[i % len(BASE_PRICES)] for i in range(rows)],
            "trade_ts": [at] * rows,
            "ingest_ts": [at] * rows,
            "processed_ts": [at + dt.timedelta(seconds=1)] * rows,
            "conditions": [None] * rows,
            "kafka_partition": [i % 3 for i in range(rows)],
            "kafka_offset": [offset + i for i in range(rows)],
            "trade_date": [at.date()] * rows,
        },
        schema=contracts.LAKE_SCHEMA,
    )


def next_batch(seeder: Seeder, symbols: tuple[str, ...]) -> dt.datetime:
    """Commit one more micro-batch (one trade per symbol, now); returns its time."""
    at = dt.datetime.now(dt.UTC)
    batch_id = int(at.timestamp()) // TRIGGER_S
    done = seeder.delta.transaction_version(contracts.SPARK_APP_ID) or 0
    seeder.batch(one_batch(symbols, at, 10**12 + batch_id * 100), max(batch_id, done + 1))
    return at


def lake_tail(
    settings: Settings,
    seeder: Seeder,
    symbols: tuple[str, ...],
    repeats: int,
    baseline: ModuleType | None = None,
) -> None:
    """The dashboard's tail over the seeded table: a fresh reader's first read, a refresh
    after one more micro-batch, refreshes with nothing new, a refresh after maintenance."""
    tail = LakeTail(settings)
    first = once(
        f"LakeTail first read ({tail.window.total_seconds() / 60:.0f} min)",
        lambda: tail.read(dt.datetime.now(dt.UTC)),
    )
    print(
        f"  ({first.num_rows:,} rows from {tail.stats.files} files, table v{tail.version})",
        flush=True,
    )
    next_batch(seeder, symbols)
    once("LakeTail refresh: one new micro-batch", lambda: tail.read(dt.datetime.now(dt.UTC)))
    if baseline is None:
        report(
            "LakeTail refresh, nothing new", *timed(lambda: tail.read(dt.datetime.now(dt.UTC)), 20)
        )
    else:
        old = baseline.LakeTail(settings)
        old.read(dt.datetime.now(dt.UTC))
        pair = timed_pair(
            lambda: tail.read(dt.datetime.now(dt.UTC)),
            lambda: old.read(dt.datetime.now(dt.UTC)),
            20,
        )
        report_pair("LakeTail refresh, nothing new", *pair, target=None)
    upkeep = once(
        "maintenance run (open-day compaction, vacuum, log cleanup)",
        lambda: seeder.maintain(dt.datetime.now(dt.UTC).date()),
    )
    compaction = upkeep[0].compaction if upkeep else None  # type: ignore[index]
    print(f"  {compaction}", flush=True)
    files = tail.stats.files
    once("LakeTail refresh after the maintenance", lambda: tail.read(dt.datetime.now(dt.UTC)))
    print(f"  (files read: {tail.stats.files - files})", flush=True)


# --- 50 symbols: the first load of a fresh process ------------------------------------------


def first_load_fifty(
    base: Settings,
    root: str,
    trades: int,
    repeats: int,
    tail_baseline: ModuleType | None,
    *,
    replay_minutes: int,
    recent_batches: int,
    first_loads: int = 1,
) -> None:
    """A fresh process's first page load and the warm refreshes with 50 symbols, over a
    24-hour day of ``trades`` trades ending now, seeded as the platform writes and
    maintains it (``seed_lake``); the tail window is ``DASHBOARD_TAIL_MINUTES``. With
    ``tail_baseline``, that revision's ``LakeTail`` in turn on the same table."""
    from producer.simulator.market import DEMO_50_TICKERS

    symbols = DEMO_50_TICKERS
    settings = base.model_copy(
        update={"lake_prefix": f"{root}/fifty", "summaries_prefix": f"{root}/fifty-summaries"}
    )
    table = once(
        f"generate {trades:,} trades of 50 symbols (24 h)",
        lambda: generate(trades, dt.datetime.now(dt.UTC), symbols),
    )
    seeder = once(
        "seed the lake table (micro-batches + maintenance)",
        lambda: seed_lake(settings, table, replay_minutes, recent_batches),
    )
    seeded("lake", seeder)
    once(
        "build + publish summaries of 50 symbols (DuckDB)", lambda: build_summaries(settings, table)
    )
    print(load(), flush=True)

    def fresh(module: ModuleType) -> Store:
        return Store(settings, tail=module.LakeTail(settings))

    def first_load(store: Store, now: dt.datetime) -> object:
        snap = store.snapshot([now.date()], now)
        return page_refresh(snap, symbols, now)

    from streamlit_app import lake_tail as current_tail

    variants = [("current", current_tail)] + (
        [("baseline", tail_baseline)] if tail_baseline else []
    )
    # Fresh stores in turn (current, baseline, current, ...): one sample each is noise.
    firsts: dict[str, list[float]] = {label: [] for label, _ in variants}
    warm: dict[str, Store] = {}
    for _ in range(first_loads):
        for label, module in variants:
            store = fresh(module)
            start_ms = time.perf_counter()
            first_load(store, dt.datetime.now(dt.UTC))
            firsts[label].append((time.perf_counter() - start_ms) * 1000)
            warm[label] = store
    for label, _ in variants:
        samples = firsts[label]
        report(f"first load, fresh store ({label}), {len(samples)}x", *_percentiles(samples), 3000)
        stats = getattr(warm[label].tail, "stats", None)
        read = f"; tail read {stats.files:,} files" if stats is not None else ""
        print(f"  max {max(samples):.1f} ms{read}", flush=True)
    if tail_baseline:
        ratio = statistics.median(firsts["current"]) / statistics.median(firsts["baseline"])
        print(f"  first load current / baseline (p50): {ratio:.2f}")
    for label, _ in variants:
        store = warm[label]
        report(
            f"warm refresh ({label})",
            *timed(lambda s=store: first_load(s, dt.datetime.now(dt.UTC)), repeats),
            target=3000,
        )
    next_batch(seeder, symbols)
    for label, _ in variants:
        store = warm[label]
        report(
            f"warm refresh after one new micro-batch ({label})",
            *timed(lambda s=store: first_load(s, dt.datetime.now(dt.UTC)), 1),
            target=3000,
        )
    store = fresh(current_tail)
    now = dt.datetime.now(dt.UTC)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="leave the objects in place")
    parser.add_argument(
        "--baseline",
        metavar="GIT_REV",
        help="also time streamlit_app/analytics.py of this revision, interleaved, same snapshot",
    )
    parser.add_argument(
        "--tail-baseline",
        metavar="GIT_REV",
        help="also time streamlit_app/lake_tail.py of this revision (one that reads Delta)",
    )
    parser.add_argument("--skip-render", action="store_true", help="no AppTest page render")
    parser.add_argument(
        "--tail-only", action="store_true", help="only the lake reads and the LakeTail section"
    )
    parser.add_argument(
        "--fifty",
        action="store_true",
        help="only the first load of a fresh process and warm refreshes with 50 symbols",
    )
    parser.add_argument(
        "--replay-minutes",
        type=int,
        default=20,
        help="minutes before now seeded as 5 s micro-batches (the hours before fast-forwarded)",
    )
    parser.add_argument(
        "--recent-batches",
        type=int,
        default=36,
        help="micro-batches committed since the last maintenance run (0..59)",
    )
    parser.add_argument(
        "--first-loads",
        type=int,
        default=5,
        help="with --fifty: first loads of a fresh store per variant, interleaved",
    )
    args = parser.parse_args(argv)
    configure_logging("WARNING")  # the tail's debug lines off stdout

    base = load_settings()
    baseline = load_baseline(args.baseline) if args.baseline else None
    tail_baseline = load_baseline(args.tail_baseline, "lake_tail") if args.tail_baseline else None
    root = f"bench-dashboard-{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(
        update={"lake_prefix": f"{root}/processed_trades", "summaries_prefix": f"{root}/summaries"}
    )
    now = dt.datetime.now(dt.UTC)
    print(f"store {base.s3_endpoint_url} bucket {base.s3_bucket} prefix {root}/")
    print(f"{os.cpu_count()} cores; {load()}")
    try:
        if args.fifty:
            first_load_fifty(
                base,
                root,
                args.trades,
                args.repeats,
                tail_baseline,
                replay_minutes=args.replay_minutes,
                recent_batches=args.recent_batches,
                first_loads=args.first_loads,
            )
            print(load(), flush=True)
            return 0
        table = once(
            f"generate {args.trades:,} trades (24 h to now)",
            lambda: generate(args.trades, now, DEFAULT_TICKERS),
        )
        seeder = once(
            "seed the lake table (micro-batches + maintenance)",
            lambda: seed_lake(settings, table, args.replay_minutes, args.recent_batches),
        )
        seeded("lake", seeder)
        if not args.tail_only:
            once("build + publish summaries (DuckDB)", lambda: build_summaries(settings, table))
            store = Store(settings)
            once("snapshot cold (summaries + tail)", lambda: store.snapshot([now.date()], now))
            page_queries(store, dt.datetime.now(dt.UTC), args.repeats, baseline)
            if not args.skip_render:
                page_render(settings, max(5, args.repeats // 6), baseline)
                print(load(), flush=True)
        lake_reads(settings, dt.datetime.now(dt.UTC), args.repeats)
        lake_tail(settings, seeder, DEFAULT_TICKERS, args.repeats, tail_baseline)
        print(load(), flush=True)
    finally:
        if not args.keep:
            cleanup(base, root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
