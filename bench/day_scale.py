"""Benchmark: a 50-symbol, 24-hour open day of the Delta lake table, at points of the day,
for opening the table, today's summary refresh, today's quality checks, the dashboard's
lake tail and the open-day maintenance.

For each point of the day (default 01:00, 06:00, 12:00, 23:59) it builds, under a unique
prefix of the object store, the lake table ``processed_trades`` as the platform leaves it
at that moment (``bench/lake_seed.py``): ``--symbols`` symbols, ``--rows`` trades per
symbol per 5 s micro-batch, each micro-batch written by the streaming writer's own code
(one file per symbol, ``spark.lake_files``) and committed with the query's application
transaction (``finpipe.delta_commit.commit_files``), and every 60 batches (5 minutes)
one ``lake_maintenance_job`` pass (``maintenance.maintain``: the open day compacted, lite
vacuum, log cleanup). The last ``--replay-minutes`` before the point are replayed batch by
batch; the day before them is fast-forwarded (hour-sized commits, then compacted by the
same maintenance, so the day's files are the ones the maintenance leaves; see
``lake_seed``). On the way, the summaries are refreshed ``--refresh-batches`` batches
before the point and the table version of ``--check-minutes`` before it is kept as the
checks' watermark. Then, at the point, it times:

* ``open``: opening the newest snapshot (``LakeTable.open``: the newest checkpoint and
  the log entries after it), median of 3; with the log's size;
* ``refresh``: today's summaries from the previous refresh's state (what a
  ``summaries_refresh_sensor`` run does, without Dagster: the state, a snapshot, the log's
  new files since the state's version, the affected minutes re-read, three publishes,
  the state saved);
* ``checks``: the scheduled quality checks (schema, row rules, duplicates, rejects) over
  what the commits since the watermark added (``checks.scope``: the new files' Kafka
  offset ranges); the Kafka reconciliation is not included (it needs a topic);
* ``tail``: the dashboard's ``LakeTail`` (``DASHBOARD_TAIL_MINUTES``) read by a fresh
  reader at the point, then a warm refresh after one more micro-batch, a refresh with
  nothing new (median of 5), and a refresh after the next maintenance run;
* ``maint``: one ``lake_maintenance_job`` pass at the point (the files the open day's
  compaction rewrote).

**The baseline, same run, same table** (there is no old layout to compare with any
more): each bounded operation against its unbounded form at full size. ``rebuild`` is
the refresh from no state (the three summaries of the whole day from the snapshot, as a
refresh did before it was incremental, and as the close does); ``full checks`` are the
checks over yesterday and today in full (what a run without a usable watermark reads).
The ratios printed are rebuild / refresh and full checks / checks.

Usage (against a MinIO; the test suite's for slot N is at 127.0.0.1:19000+100*N):

    S3_ENDPOINT_URL=http://127.0.0.1:19600 .venv/bin/python bench/day_scale.py

A smoke run: ``--symbols 2 --points 00:15 --replay-minutes 12``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from lake_seed import MAINTENANCE_EVERY, TRIGGER_S, Seeder, cleanup, log_size

from finpipe import contracts, lake, summaries
from finpipe.logs import configure_logging
from finpipe.settings import Settings, load_settings
from finpipe_dagster.lake import checks
from finpipe_dagster.resources import LakeTables
from finpipe_dagster.summaries import incremental
from streamlit_app.lake_tail import LakeTail

FIRST_BATCH = 1_000_000  # the checkpoint's batch ids go on from earlier days
POINTS = ("01:00", "06:00", "12:00", "23:59")
HOUR_BATCHES = 3600 // TRIGGER_S


def symbols(count: int) -> list[str]:
    crypto = [f"BINANCE:C{i:02d}USDT" for i in range(count // 2)]
    return crypto + [f"S{i:02d}.X" for i in range(count - len(crypto))]


def batch_rows(day: dt.date, names: list[str], batches: range, n: int) -> pa.Table:
    """The ``n`` trades per symbol of each batch index in ``batches`` (batch ``b`` holds
    trade times inside the day's ``b``-th 5 s), ``LAKE_SCHEMA``; symbol ``i`` is alone on
    Kafka partition ``i``, its offsets ``b * n ...``."""
    count, width = len(names), len(batches)
    day_ms = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() * 1000)
    rng = np.random.default_rng(batches.start * 1000 + count)
    index = np.arange(batches.start, batches.stop)
    t0 = day_ms + index * TRIGGER_S * 1000
    ts = np.sort(rng.integers(0, TRIGGER_S * 1000, (count, width, n)), axis=2) + t0[None, :, None]
    symbol = np.broadcast_to(np.arange(count)[:, None, None], ts.shape)
    processed = np.broadcast_to((t0 + TRIGGER_S * 1000 + 500)[None, :, None], ts.shape)
    offset = np.broadcast_to((index * n)[None, :, None] + np.arange(n), ts.shape)
    price = 100 + symbol + np.round(rng.normal(0, 0.5, ts.shape), 2)
    volume = np.round(rng.uniform(0.001, 5, ts.shape), 3)
    total = ts.size
    stamp = lambda ms: pa.array(ms.ravel(), pa.int64()).cast(pa.timestamp("ms", tz="UTC"))  # noqa: E731
    table = pa.table(
        {
            "symbol": pa.array(names).take(pa.array(symbol.ravel())),
            "price": price.ravel(),
            "volume": volume.ravel(),
            "trade_value": (price * volume).ravel(),
            "trade_ts": stamp(ts),
            "ingest_ts": stamp(ts + 20),
            "processed_ts": stamp(processed),
            "conditions": pa.nulls(total, pa.list_(pa.string())),
            "kafka_partition": pa.array(symbol.ravel(), pa.int32()),
            "kafka_offset": offset.ravel(),
            "trade_date": pa.array([day] * total, pa.date32()),
        }
    )
    return table.cast(contracts.LAKE_SCHEMA)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def median_of(fn: Callable[[], Any], repeats: int) -> float:
    return statistics.median(timed(fn)[0] for _ in range(repeats))


def refresh_once(
    settings: Settings, store: Any, day: dt.date, *, from_nothing: bool = False
) -> incremental.RefreshReport:
    """What one run of today's summaries does (``summaries.assets._build_day`` and the
    publishes): the previous state (none: ``from_nothing``), one snapshot, the refresh,
    three publishes naming the lake version, the state saved."""
    previous = None if from_nothing else incremental.load_state(settings, store, day)
    table = lake.trades_table(settings)
    snapshot = table.open()
    con = duckdb.connect()
    state, report = incremental.refresh(con, settings, snapshot, day, previous, table=table)
    tables = incremental.published_tables(con, state, dt.datetime.now(dt.UTC))
    con.close()
    source = summaries.LakeState(settings.lake_uri, state.version, state.rows)
    for name, rows in tables.items():
        summaries.publish(settings, name, day, rows, source=source)
    incremental.save_state(settings, store, day, state)
    return report


def run_checks(
    settings: Settings, lake_tables: LakeTables, day: dt.date, since: int | None
) -> checks.Scope:
    """The reads of one scheduled quality-check run (``checks._evaluate`` without Dagster
    and Kafka): the rows since ``since`` (None: yesterday and today in full)."""
    table = lake.trades_table(settings)
    snapshot = table.open()
    days = [day - dt.timedelta(days=1), day]
    found = checks.scope(table, snapshot, days, since)
    con = duckdb.connect()
    con.register("processed_trades", found.rows)
    rows = checks._scalar(con, "SELECT count(*) FROM processed_trades")
    checks.schema_problems(snapshot)
    for where in checks.RULES.values():
        checks._count_and_sample(con, where)
    checks._duplicates(con, rows)
    con.close()
    checks.rejects_in_days(lake_tables, days)
    found.meta["rows_checked"] = rows
    return found


def point_seconds(point: str) -> int:
    hours, minutes = point.split(":")
    return int(hours) * 3600 + int(minutes) * 60


def hour_chunks(
    day: dt.date, names: list[str], stop: int, rows: int
) -> Iterator[tuple[int, pa.Table]]:
    """The batches ``[0, stop)`` of the day an hour at a time: (last batch id, rows)."""
    for first in range(0, stop, HOUR_BATCHES):
        batches = range(first, min(first + HOUR_BATCHES, stop))
        yield FIRST_BATCH + batches.stop - 1, batch_rows(day, names, batches, rows)


def measure_point(base: Settings, point: str, names: list[str], args: argparse.Namespace) -> dict:
    root = f"bench-day/{args.run}/{point.replace(':', '')}"
    settings = base.model_copy(
        update={"lake_prefix": f"{root}/processed_trades", "summaries_prefix": f"{root}/summaries"}
    )
    day = args.day
    now = point_seconds(point) // TRIGGER_S  # batches 0 .. now-1 are in by the point
    at = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(seconds=now * TRIGGER_S)
    start = max(now - args.replay_minutes * 60 // TRIGGER_S, 0)
    start -= start % MAINTENANCE_EVERY  # the fast-forward ends where a maintenance ran
    refresh_at = now - 1 - args.refresh_batches
    check_at = now - 1 - args.check_minutes * 60 // TRIGGER_S
    seeder = Seeder(settings)
    store = seeder.lake_tables.store()  # the summaries' state objects, as the asset's
    watermark = seeder.version
    if start:
        seeder.fast_forward(hour_chunks(day, names, start, args.rows))
        seeder.maintain(day)
        watermark = seeder.version
    if refresh_at < start:
        refresh_once(settings, store, day)
    for i in range(start, now):
        seeder.batch(batch_rows(day, names, range(i, i + 1), args.rows), FIRST_BATCH + i)
        if (i + 1) % MAINTENANCE_EVERY == 0:
            seeder.maintain(day)
        if i == refresh_at:
            refresh_once(settings, store, day)  # the previous refresh
        if i == check_at:
            watermark = seeder.version  # the previous check's
    seed_s = seeder.seconds
    table = lake.trades_table(settings)
    open_s = median_of(table.open, 3)
    snapshot = table.open()
    assert snapshot is not None
    files = lake.table_files(snapshot, [day])
    log = log_size(settings, table)
    refresh_s, report = timed(lambda: refresh_once(settings, store, day))
    checks_s, scope = timed(lambda: run_checks(settings, seeder.lake_tables, day, watermark))
    full_checks_s, full_scope = timed(lambda: run_checks(settings, seeder.lake_tables, day, None))
    rebuild_s, rebuilt = timed(lambda: refresh_once(settings, store, day, from_nothing=True))
    tail = LakeTail(settings)
    tail_s, tail_rows = timed(lambda: tail.read(at))
    tail_files = tail.stats.files
    seeder.batch(batch_rows(day, names, range(now, now + 1), args.rows), FIRST_BATCH + now)
    later = at + dt.timedelta(seconds=TRIGGER_S)
    tail_refresh_s, _ = timed(lambda: tail.read(later))
    tail_idle_s = median_of(lambda: tail.read(later), 5)
    maint_s, upkeep = timed(lambda: seeder.maintain(day))
    tail_after_maint_s, _ = timed(lambda: tail.read(later))
    compaction = upkeep[0].compaction if upkeep else None
    result = {
        "point": point,
        "version": snapshot.version(),
        "files": len(files),
        "rows_in_day": sum(f.rows for f in files),
        "log": log,
        "open_s": open_s,
        "refresh_s": refresh_s,
        "refresh": report,
        "rebuild_s": rebuild_s,
        "rebuild": rebuilt,
        "checks_s": checks_s,
        "checks_files": getattr(scope.meta.get("files_added"), "value", None),
        "checks_rows": scope.meta["rows_checked"],
        "checks_bounded": scope.bounded,
        "full_checks_s": full_checks_s,
        "full_checks_rows": full_scope.meta["rows_checked"],
        "tail_s": tail_s,
        "tail_files": tail_files,
        "tail_rows": tail_rows.num_rows,
        "tail_refresh_s": tail_refresh_s,
        "tail_idle_s": tail_idle_s,
        "tail_after_maint_s": tail_after_maint_s,
        "maint_s": maint_s,
        "maint_files": compaction.files_removed if compaction else 0,
        "seed_s": seed_s,
        "commits": seeder.commits,
        "fast_forwarded": start,
    }
    if not args.keep:
        cleanup(base, root)
    return result


def show(r: dict) -> None:
    log, refresh, rebuilt = r["log"], r["refresh"], r["rebuild"]
    print(
        f"{r['point']}  table v{r['version']}: {r['files']} files / {r['rows_in_day']:,} rows "
        f"in the day; log {log['json']} entries ({log['json_bytes'] / 1e6:.1f} MB), "
        f"newest checkpoint {log['newest_checkpoint_bytes'] / 1e3:.0f} kB\n"
        f"  open={r['open_s']:.3f}s\n"
        f"  refresh={r['refresh_s']:.2f}s ({refresh.files_added} new files, read "
        f"{refresh.files_read} files / {refresh.rows_read:,} rows, "
        f"{refresh.minutes_rebuilt} minutes)  rebuild={r['rebuild_s']:.2f}s (read "
        f"{rebuilt.files_read} files / {rebuilt.rows_read:,} rows; "
        f"x{r['rebuild_s'] / r['refresh_s']:.1f})\n"
        f"  checks={r['checks_s']:.2f}s ({'bounded' if r['checks_bounded'] else 'WHOLE DAYS'}: "
        f"{r['checks_files']} new files, {r['checks_rows']:,} rows)  "
        f"full checks={r['full_checks_s']:.2f}s ({r['full_checks_rows']:,} rows; "
        f"x{r['full_checks_s'] / max(r['checks_s'], 1e-9):.1f})\n"
        f"  tail first read={r['tail_s']:.2f}s ({r['tail_files']} files, {r['tail_rows']:,} rows)"
        f"  refresh after one batch={r['tail_refresh_s'] * 1000:.0f}ms  "
        f"nothing new={r['tail_idle_s'] * 1000:.0f}ms  "
        f"after maintenance={r['tail_after_maint_s'] * 1000:.0f}ms\n"
        f"  maint={r['maint_s']:.2f}s ({r['maint_files']} files compacted)\n"
        f"  (seeding {r['seed_s']:.0f}s: {r['commits']} commits, the first "
        f"{r['fast_forwarded']} batches fast-forwarded)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--rows", type=int, default=10, help="trades per symbol per 5 s batch")
    parser.add_argument("--points", nargs="+", default=list(POINTS))
    parser.add_argument(
        "--replay-minutes",
        type=int,
        default=60,
        help="minutes before each point replayed as micro-batches (the rest fast-forwarded)",
    )
    parser.add_argument(
        "--refresh-batches",
        type=int,
        default=1,
        help="batches since the previous summaries refresh (12: the sensor's 60 s)",
    )
    parser.add_argument(
        "--check-minutes", type=int, default=10, help="minutes since the previous checks"
    )
    parser.add_argument("--keep", action="store_true", help="leave the tables in place")
    args = parser.parse_args(argv)
    configure_logging("WARNING")  # the tail's debug lines off stdout
    args.run = uuid.uuid4().hex[:8]
    args.day = dt.datetime.now(dt.UTC).date()
    base = load_settings()
    names = symbols(args.symbols)
    print(
        f"# day_scale: {len(names)} symbols, {args.rows} trades per symbol per 5 s batch, "
        f"replay {args.replay_minutes} min, maintenance every {MAINTENANCE_EVERY} batches, "
        f"cores={os.cpu_count()}, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    for point in args.points:
        show(measure_point(base, point, names, args))
    print(f"# load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
