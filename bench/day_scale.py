"""Benchmark: a 50-symbol, 24-hour open day, as the code once kept it and with the rolling
compaction, for today's summary refresh, today's quality checks and the objects listed.

For each point of the day (default 01:00, 06:00, 12:00, 23:59) it writes, under a unique
prefix of the object store, the state the open day is in at that moment with the rolling
compaction (the writer's layout: ``contracts.partition_dir`` folders, Spark's batch-id
names, the contract's schema): per symbol the hour segments and the open segment the
rolling compaction would have produced (written directly as ``compacted-<first>-<last>``,
the same rows a run of ``rolling_compaction.roll_day`` writes: PUTs at a few hundred
objects/s cannot replay a day of batches in minutes), and the batch files of the last
``ROLLING_COMPACTION_MIN_AGE_SECONDS`` + 60 s. Then it times, on that state:

* ``refresh``: today's summaries after one more minute of batches (12 per symbol), from
  the previous refresh's state: listing, incremental rebuild, publishing (what a run of
  ``summaries_refresh_sensor`` does);
* ``checks``: the scheduled quality checks (schema, row rules, duplicates) over what
  arrived since a check 10 minutes before (``checked_span``); the Kafka reconciliation is
  not included (it needs a topic);
* ``roll``: one rolling compaction run over that state (the minute's fold of the young
  batch files into the open segments);
* ``close``: the summaries of the whole day from nothing, at the last point only.

The baseline (every batch object still there, the full rebuild of the summaries and the
full-day checks the code did before) is generated for the first minutes of the day only
(``--baseline-minutes``; 864,000 objects would take the object store most of an hour to
accept), and its cost per object is extrapolated linearly to each point, which the
output says.

Usage (against the test MinIO the test suite starts for slot N at 127.0.0.1:19000+100*N):

    S3_ENDPOINT_URL=http://127.0.0.1:19600 .venv/bin/python bench/day_scale.py
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import io
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from finpipe import contracts, lake, summaries
from finpipe.settings import Settings, load_settings
from finpipe_dagster.lake import checked_span, checks
from finpipe_dagster.lake.rolling_compaction import roll_day
from finpipe_dagster.resources import FinpipeSettings, LakeS3Resource
from finpipe_dagster.summaries import incremental
from finpipe_dagster.summaries import sql as summary_sql

TRIGGER_S = 5
FIRST_BATCH = 1_000_000  # the checkpoint's batch ids go on from earlier days
POINTS = ("01:00", "06:00", "12:00", "23:59")


def symbols(count: int) -> list[str]:
    crypto = [f"BINANCE:C{i:02d}USDT" for i in range(count // 2)]
    return crypto + [f"S{i:02d}.X" for i in range(count - len(crypto))]


def batch_rows(day: dt.date, symbol_index: int, symbol: str, batch: int, n: int) -> dict:
    """The ``n`` trades of one batch for one symbol: trade times inside the batch's 5 s."""
    start_ms = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() * 1000)
    rng = np.random.default_rng(batch * 1000 + symbol_index)
    t0 = start_ms + (batch - FIRST_BATCH) * TRIGGER_S * 1000
    ts = np.sort(t0 + rng.integers(0, TRIGGER_S * 1000, n))
    price = 100 + symbol_index + np.round(rng.normal(0, 0.5, n), 2)
    volume = np.round(rng.uniform(0.001, 5, n), 3)
    offsets = (batch - FIRST_BATCH) * n + np.arange(n)
    return {
        "ts": ts,
        "price": price,
        "volume": volume,
        "offset": offsets,
        "symbol": symbol,
        "partition": symbol_index,
    }


def to_table(parts: list[dict], day: dt.date) -> pa.Table:
    ts = np.concatenate([p["ts"] for p in parts])
    price = np.concatenate([p["price"] for p in parts])
    volume = np.concatenate([p["volume"] for p in parts])
    n = len(ts)
    stamp = pa.array(ts, pa.timestamp("ms", tz="UTC"))
    table = pa.table(
        {
            "symbol": pa.array([parts[0]["symbol"]] * n),
            "price": price,
            "volume": volume,
            "trade_value": price * volume,
            "trade_ts": stamp,
            "ingest_ts": stamp,
            "processed_ts": stamp,
            "conditions": pa.nulls(n, pa.list_(pa.string())),
            "kafka_partition": pa.array([parts[0]["partition"]] * n, pa.int32()),
            "kafka_offset": np.concatenate([p["offset"] for p in parts]),
            "trade_date": pa.array([day] * n, pa.date32()),
        }
    )
    return table.cast(contracts.LAKE_SCHEMA)


def put(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    with fs.open_output_stream(path) as out:
        out.write(buffer.getvalue())


def folder(settings: Settings, day: dt.date, symbol: str) -> str:
    return (
        f"{settings.s3_bucket}/{settings.lake_prefix}/"
        f"{contracts.partition_dir(day.isoformat(), symbol)}"
    )


def write_all(fs: pafs.FileSystem, jobs: list[tuple[str, Callable[[], pa.Table]]]) -> float:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda job: put(fs, job[0], job[1]()), jobs))
    return time.perf_counter() - started


def batch_jobs(
    settings: Settings, day: dt.date, names: list[str], batches: range, rows: int
) -> list[tuple[str, Callable[[], pa.Table]]]:
    return [
        (
            f"{folder(settings, day, s)}/{contracts.batch_file_name(b)}",
            lambda i=i, s=s, b=b: to_table([batch_rows(day, i, s, b, rows)], day),
        )
        for i, s in enumerate(names)
        for b in batches
    ]


def segment_jobs(
    settings: Settings, day: dt.date, names: list[str], folded: int, span: int, rows: int
) -> list[tuple[str, Callable[[], pa.Table]]]:
    """The segments the rolling compaction leaves once ``folded`` batches are folded."""
    ranges = [
        (FIRST_BATCH + lo, FIRST_BATCH + min(lo + span, folded) - 1)
        for lo in range(0, folded, span)
    ]
    return [
        (
            f"{folder(settings, day, s)}/{contracts.compacted_segment_name(first, last)}",
            lambda i=i, s=s, first=first, last=last: to_table(
                [batch_rows(day, i, s, b, rows) for b in range(first, last + 1)], day
            ).sort_by([("trade_ts", "ascending"), ("kafka_offset", "ascending")]),
        )
        for i, s in enumerate(names)
        for first, last in ranges
    ]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def refresh_once(
    settings: Settings, fs: pafs.FileSystem, day: dt.date
) -> incremental.RefreshReport:
    """What one refresh run does: list, rebuild what changed, publish, save the state."""
    previous = incremental.load_state(settings, fs, day)
    files = lake.list_lake_files(settings, [day], filesystem=fs)
    con = duckdb.connect()
    state, report = incremental.refresh(con, settings, fs, files, previous)
    source = summaries.LakeState(settings.lake_uri, state.watermark)
    for name, table in incremental.published_tables(con, state, dt.datetime.now(dt.UTC)).items():
        summaries.publish(settings, name, day, table, source=source)
    incremental.save_state(settings, fs, day, state)
    con.close()
    return report


def full_rebuild_old(settings: Settings, fs: pafs.FileSystem, day: dt.date) -> None:
    """The refresh as it was: the three summaries from the whole day's files."""
    files = lake.list_lake_files(settings, [day], filesystem=fs)
    con = duckdb.connect()
    con.register("processed_trades", lake.files_dataset(files, fs))
    summary_sql.ohlcv_1m(con, day)
    summary_sql.daily_symbol_stats(con, day)
    summary_sql.latest_prices(con, day, dt.datetime.now(dt.UTC))
    con.close()


def row_checks(
    settings: Settings, fs: pafs.FileSystem, files: list[lake.LakeFile], *, read_once: bool
) -> int:
    """The checks' reads (schema, row rules, duplicates) over ``files``; returns the rows.
    ``read_once``: as the bounded run does (its share read into memory once)."""
    con = duckdb.connect()
    dataset = lake.files_dataset(files, fs)
    con.register("processed_trades", dataset.to_table() if read_once else dataset)
    rows = checks._scalar(con, "SELECT count(*) FROM processed_trades")
    checks.schema_problems(settings, [], files)
    for where in checks.RULES.values():
        checks._count_and_sample(con, where)
    checks._duplicates(con, rows, {})
    con.close()
    return rows


def bounded_checks(settings: Settings, fs: pafs.FileSystem, day: dt.date) -> tuple[int, int]:
    span = checked_span.day_to_check(settings, fs, day, day)
    if span is None:
        return 0, 0
    rows = row_checks(settings, fs, span.files, read_once=True)
    checked_span.save_span(settings, fs, day, span.span)
    return len(span.files), rows


def point_seconds(point: str) -> int:
    hours, minutes = point.split(":")
    return int(hours) * 3600 + int(minutes) * 60


def measure_point(base: Settings, point: str, names: list[str], args: argparse.Namespace) -> dict:
    settings = base.model_copy(
        update={
            "lake_prefix": f"bench-day/{args.run}/{point.replace(':', '')}/processed_trades",
            "summaries_prefix": f"bench-day/{args.run}/{point.replace(':', '')}/summaries",
            "rolling_compaction_min_age_seconds": 0,
            "compaction_grace_seconds": 0,
        }
    )
    fs = lake.s3_filesystem(settings)
    day = args.day
    now_batches = point_seconds(point) // TRIGGER_S
    young = (base.rolling_compaction_min_age_seconds + 60) // TRIGGER_S
    span = base.rolling_compaction_segment_batches
    # the state of 10 minutes ago for the checks, then of 1 minute ago for the refresh
    folded_10 = max(now_batches - young - 120, 0)
    earlier = segment_jobs(settings, day, names, folded_10, span, args.rows)
    put_s = write_all(fs, earlier)
    checked_span.save_span(
        settings,
        fs,
        day,
        checked_span.day_to_check(settings, fs, day, day).span,  # type: ignore[union-attr]
    )
    folded = max(now_batches - young, 0)
    written = {path for path, _ in earlier}  # full hours are the same 10 minutes later
    put_s += write_all(
        fs,
        [
            j
            for j in segment_jobs(settings, day, names, folded, span, args.rows)
            if j[0] not in written
        ],
    )
    put_s += write_all(
        fs,
        batch_jobs(
            settings,
            day,
            names,
            range(FIRST_BATCH + folded, FIRST_BATCH + now_batches - 12),
            args.rows,
        ),
    )
    # leftovers of the folds are gone (grace 0): keep only what the rolling compaction leaves
    lake_s3 = LakeS3Resource(settings=FinpipeSettings(**_env(settings)))
    roll_day(
        settings.model_copy(update={"rolling_compaction_min_age_seconds": 10**9}), fs, lake_s3, day
    )
    refresh_once(settings, fs, day)  # the previous refresh
    put_s += write_all(
        fs,
        batch_jobs(
            settings,
            day,
            names,
            range(FIRST_BATCH + now_batches - 12, FIRST_BATCH + now_batches),
            args.rows,
        ),
    )
    objects = len(lake.list_lake_objects(settings, [day], filesystem=fs))
    refresh_s, report = timed(lambda: refresh_once(settings, fs, day))
    checks_s, (check_objects, check_rows) = timed(lambda: bounded_checks(settings, fs, day))
    roll_s, rolled = timed(lambda: roll_day(settings, fs, lake_s3, day))
    result = {
        "point": point,
        "objects": objects,
        "segments_per_symbol": -(-folded // span),
        "refresh_s": refresh_s,
        "refresh_objects_read": report.objects_read,
        "checks_s": checks_s,
        "checks_objects": check_objects,
        "checks_rows": check_rows,
        "roll_s": roll_s,
        "roll_batches": rolled.batches_folded,
        "rows_in_day": now_batches * args.rows * len(names),
        "put_s": put_s,
    }
    if point == args.points[-1]:
        files = lake.list_lake_files(settings, [day], filesystem=fs)
        result["close_s"], _ = timed(
            lambda: incremental.refresh(duckdb.connect(), settings, fs, files, None)
        )
    fs.delete_dir_contents(f"{settings.s3_bucket}/bench-day/{args.run}/{point.replace(':', '')}")
    return result


def _env(settings: Settings) -> dict[str, str]:
    return {"lake_prefix": settings.lake_prefix, "summaries_prefix": settings.summaries_prefix}


def measure_baseline(base: Settings, names: list[str], args: argparse.Namespace) -> list[dict]:
    """The old layout and code on the first minutes of the day: cost per object."""
    results = []
    for minutes in args.baseline_minutes:
        settings = base.model_copy(
            update={
                "lake_prefix": f"bench-day/{args.run}/base{minutes}/processed_trades",
                "summaries_prefix": f"bench-day/{args.run}/base{minutes}/summaries",
            }
        )
        fs = lake.s3_filesystem(settings)
        batches = range(FIRST_BATCH, FIRST_BATCH + minutes * 60 // TRIGGER_S)
        put_s = write_all(fs, batch_jobs(settings, args.day, names, batches, args.rows))
        objects = len(lake.list_lake_objects(settings, [args.day], filesystem=fs))
        started = time.perf_counter()
        full_rebuild_old(settings, fs, args.day)
        refresh_s = time.perf_counter() - started
        started = time.perf_counter()
        row_checks(
            settings, fs, lake.list_lake_files(settings, [args.day], filesystem=fs), read_once=False
        )
        checks_s = time.perf_counter() - started
        results.append(
            {
                "minutes": minutes,
                "objects": objects,
                "refresh_s": refresh_s,
                "checks_s": checks_s,
                "put_s": put_s,
            }
        )
        fs.delete_dir_contents(f"{settings.s3_bucket}/bench-day/{args.run}/base{minutes}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--rows", type=int, default=10, help="trades per symbol per batch")
    parser.add_argument("--points", nargs="+", default=list(POINTS))
    parser.add_argument("--baseline-minutes", nargs="+", type=int, default=[2, 5, 10])
    args = parser.parse_args(argv)
    args.run = uuid.uuid4().hex[:8]
    args.day = dt.datetime.now(dt.UTC).date()
    base = load_settings()
    names = symbols(args.symbols)
    print(
        f"# day_scale: {len(names)} symbols, {args.rows} trades per symbol per 5 s batch, "
        f"cores={os.cpu_count()}"
    )
    baseline = measure_baseline(base, names, args)
    for b in baseline:
        print(
            f"baseline 00:{b['minutes']:02d}  objects={b['objects']:>6}  "
            f"refresh={b['refresh_s']:.2f}s  checks={b['checks_s']:.2f}s  (put {b['put_s']:.1f}s)"
        )
    # a straight line through the first and last baseline points: fixed cost + per object
    first, last = baseline[0], baseline[-1]
    spread = max(last["objects"] - first["objects"], 1)
    per_object_refresh = max(last["refresh_s"] - first["refresh_s"], 0) / spread
    per_object_checks = max(last["checks_s"] - first["checks_s"], 0) / spread
    for point in args.points:
        r = measure_point(base, point, names, args)
        old_objects = point_seconds(point) // TRIGGER_S * len(names)
        old_refresh = last["refresh_s"] + per_object_refresh * (old_objects - last["objects"])
        old_checks = last["checks_s"] + per_object_checks * (old_objects - last["objects"])
        print(
            f"{point}  objects={r['objects']:>5} (baseline {old_objects:>6})  "
            f"refresh={r['refresh_s']:.2f}s read {r['refresh_objects_read']} "
            f"(baseline ~{old_refresh:.0f}s, x{old_refresh / r['refresh_s']:.0f})  "
            f"checks={r['checks_s']:.2f}s over {r['checks_objects']} objects "
            f"/{r['checks_rows']} rows "
            f"(baseline ~{old_checks:.0f}s, x{old_checks / max(r['checks_s'], 1e-9):.0f})  "
            f"roll={r['roll_s']:.2f}s ({r['roll_batches']} batches)  rows={r['rows_in_day']}"
            + (f"  close={r['close_s']:.2f}s" if "close_s" in r else "")
            + f"  (put {r['put_s']:.1f}s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
