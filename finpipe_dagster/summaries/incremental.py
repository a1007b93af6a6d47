"""A day's summaries kept up to date from what changed in the lake since the last refresh.

The durable state of a day is one Parquet object beside the summaries,
``<summaries_prefix>/_state/trade_date=YYYY-MM-DD/data.parquet`` (one GET to read, one PUT
to write, through an obstore store of the bucket): the day's 1-minute bars
with a few more columns (``sql.STATE_BAR_EXTRA``), and in its Parquet metadata the lake it
was read from and the lake table's version the bars are complete up to (the watermark).
A refresh

1. opens a snapshot of the lake (version V) and asks its log what versions
   ``(watermark, V]`` added (``finpipe.lake_log.changes``: data-change adds only, so a
   compaction, which rewrites rows without changing them, is no news);
2. takes, per symbol, the time ranges of the day's new files (their ``trade_ts`` bounds in
   the log, widened to whole minutes): the affected (symbol, minute)s;
3. reads from the snapshot every row of those minutes, new or old, whatever file now
   holds it (a filter on ``symbol`` and ``trade_ts`` skips the other files by their
   bounds), and rebuilds their bars;
4. replaces those minutes in the state and derives the three published tables from it.

No new file of the day: nothing to read, the watermark moves. A log entry gone (older than
the log retention) or a commit that removed rows (a delete, an overwrite): the day is
rebuilt from the snapshot. A day built from nothing (the close, a backfill, a late-data
rebuild) is the same with an empty state: every minute is affected. The bars of a minute
come from all its trades summed in the same order either way, and the tables derived from
equal bars are equal. The state is written after the tables it describes: a run that stops
in between leaves an older state, and the next refresh reads the same changes again.
"""

from __future__ import annotations

import datetime as dt
import io
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import duckdb
import obstore
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import DeltaTable
from obstore.exceptions import NotFoundError

from finpipe import contracts, lake, lake_log
from finpipe.settings import Settings, same_lake
from finpipe_dagster.summaries import sql as summary_sql

STATE_NAME = "_state"
_VERSION = b"finpipe.lake_version"
_LAKE = b"finpipe.lake"
MINUTE = dt.timedelta(minutes=1)

Ranges = dict[str, list[tuple[dt.datetime, dt.datetime]]]
"""Per symbol, half-open ``[start, end)`` time ranges on whole minutes."""


@dataclass(frozen=True)
class DayState:
    bars: pa.Table
    version: int
    """The lake table version the bars hold every row of (-1: the table did not exist)."""
    lake_uri: str

    @property
    def rows(self) -> int:
        """The lake rows of the day the bars summarize."""
        return int(pc.sum(self.bars["trade_count"]).as_py() or 0) if self.bars.num_rows else 0


@dataclass(frozen=True)
class RefreshReport:
    version: int  # the snapshot read
    files_added: int  # data-change files of the day since the previous state
    files_read: int  # files of the snapshot read (new ones and older ones of their minutes)
    rows_read: int
    minutes_rebuilt: int
    incremental: bool  # False: the day was built from nothing
    reason: str = ""  # why the day was built from nothing, when it was


def state_key(settings: Settings, day: dt.date) -> str:
    """The key of a day's state object in the lake's bucket."""
    return f"{settings.summaries_prefix}/{STATE_NAME}/trade_date={day.isoformat()}/data.parquet"


def load_state(settings: Settings, store: Any, day: dt.date) -> DayState | None:
    """The day's state from ``store``, an obstore store of the lake's bucket (None: no
    state, or one this code cannot use)."""
    try:
        found = obstore.get(store, state_key(settings, day)).bytes()
    except (NotFoundError, FileNotFoundError):
        return None
    table = pq.read_table(pa.BufferReader(found))
    meta = table.schema.metadata or {}
    # A state of the pre-Delta layout (per-symbol batch ids) has no version: rebuilt.
    if _VERSION not in meta or _LAKE not in meta:
        return None
    if not table.schema.remove_metadata().equals(summary_sql.STATE_SCHEMA):
        return None
    bars = table.replace_schema_metadata(None)
    return DayState(bars, int(meta[_VERSION]), meta[_LAKE].decode())


def save_state(settings: Settings, store: Any, day: dt.date, state: DayState) -> None:
    """The day's state written to ``store`` in one PUT (a reader sees the old or the new)."""
    table = state.bars.replace_schema_metadata(
        {_VERSION: str(state.version), _LAKE: state.lake_uri}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    obstore.put(store, state_key(settings, day), buffer.getvalue())


def affected_ranges(adds: list[lake_log.FileAdd], day: dt.date) -> Ranges:
    """Per symbol, the whole minutes the ``trade_ts`` bounds of the day's ``adds`` span
    (overlapping ranges merged). A file without bounds affects its symbol's whole day."""
    day_start = dt.datetime.combine(day, dt.time(), dt.UTC)
    found: dict[str, list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    for add in adds:
        if add.trade_date != day or add.symbol is None:
            continue
        low, high = add.bound("trade_ts", "min"), add.bound("trade_ts", "max")
        if low is None or high is None:
            found[add.symbol].append((day_start, day_start + dt.timedelta(days=1)))
            continue
        found[add.symbol].append((_minute(low), _minute(high) + MINUTE))
    return {symbol: _merged(ranges) for symbol, ranges in sorted(found.items())}


def _minute(ts: dt.datetime) -> dt.datetime:
    ts = ts.astimezone(dt.UTC)
    return ts.replace(second=0, microsecond=0)


def _merged(ranges: list[tuple[dt.datetime, dt.datetime]]) -> list[tuple[dt.datetime, dt.datetime]]:
    merged: list[tuple[dt.datetime, dt.datetime]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def ranges_filter(ranges: Ranges) -> ds.Expression:
    """Rows of ``ranges``; on a snapshot dataset it also skips files by their bounds."""
    ts = contracts.LAKE_SCHEMA.field("trade_ts").type
    terms = [
        (ds.field("symbol") == symbol)
        & (ds.field("trade_ts") >= pa.scalar(start, ts))
        & (ds.field("trade_ts") < pa.scalar(end, ts))
        for symbol, spans in ranges.items()
        for start, end in spans
    ]
    expression = terms[0]
    for term in terms[1:]:
        expression = expression | term
    return expression


def _read(snapshot: DeltaTable | None, day: dt.date, ranges: Ranges | None) -> tuple[pa.Table, int]:
    """(the rows of ``day`` in ``ranges``, all when None; the number of files read)."""
    dataset = lake.snapshot_dataset(snapshot, contracts.LAKE_TABLE, [day])
    expression = None if ranges is None else ranges_filter(ranges)
    files = sum(1 for _ in dataset.get_fragments(filter=expression))
    rows = dataset.to_table(columns=contracts.LAKE_SCHEMA.names, filter=expression)
    return rows, files


def refresh(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    snapshot: DeltaTable | None,
    day: dt.date,
    state: DayState | None,
    *,
    table: lake.LakeTable | None = None,
) -> tuple[DayState, RefreshReport]:
    """The day's new state from the lake's ``snapshot`` (None: no table yet) and its
    previous ``state`` (None, or a state of another lake: build the day from the snapshot).
    ``table`` is where the snapshot's log is (default: the settings' lake table)."""
    version = snapshot.version() if snapshot is not None else -1
    empty = summary_sql.STATE_SCHEMA.empty_table()
    reason = ""
    if state is None:
        reason = "no state"
    elif not same_lake(state.lake_uri, settings.lake_uri):
        reason = "a state of another lake"
    elif state.version > version:
        reason = f"a state of version {state.version}, the lake is at {version}"
    if reason or state is None:
        return _rebuilt(con, settings, snapshot, day, empty, None, version, reason, 0)
    if state.version == version:
        return state, RefreshReport(version, 0, 0, 0, 0, True)
    found = lake_log.changes(table or lake.trades_table(settings), state.version, version)
    if found.truncated or found.removed_data:
        why = "log entries gone" if found.truncated else "a commit removed rows"
        return _rebuilt(con, settings, snapshot, day, empty, None, version, why, 0)
    adds = [a for a in found.adds if a.trade_date == day]
    if not adds:
        return DayState(state.bars, version, settings.lake_uri), RefreshReport(
            version, 0, 0, 0, 0, True
        )
    ranges = affected_ranges(adds, day)
    return _rebuilt(con, settings, snapshot, day, state.bars, ranges, version, "", len(adds))


def _rebuilt(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    snapshot: DeltaTable | None,
    day: dt.date,
    old: pa.Table,
    ranges: Ranges | None,
    version: int,
    reason: str,
    added: int,
) -> tuple[DayState, RefreshReport]:
    """``old`` bars with the minutes of ``ranges`` (every minute when None) rebuilt from
    every row the snapshot holds of them."""
    rows, files = _read(snapshot, day, ranges)
    con.register("day_rows", rows)
    rebuilt = con.sql(summary_sql.STATE_BARS_SQL).to_arrow_table()
    con.register("state_new", rebuilt)
    if ranges is None:
        merged = "SELECT * FROM state_new"
    else:
        con.register("state_old", old)
        con.register(
            "affected",
            pa.table(
                {
                    "symbol": [s for s, spans in ranges.items() for _ in spans],
                    "start": [a for spans in ranges.values() for a, _ in spans],
                    "stop": [b for spans in ranges.values() for _, b in spans],
                },
                schema=pa.schema(
                    [
                        ("symbol", pa.string()),
                        ("start", contracts.LAKE_TS),
                        ("stop", contracts.LAKE_TS),
                    ]
                ),
            ),
        )
        merged = (
            "SELECT * FROM state_old AS s WHERE NOT EXISTS (SELECT 1 FROM affected AS a "
            "WHERE a.symbol = s.symbol AND s.minute >= a.start AND s.minute < a.stop) "
            "UNION ALL BY NAME SELECT * FROM state_new"
        )
    bars = con.sql(f"SELECT * FROM ({merged}) ORDER BY symbol, minute").to_arrow_table()
    bars = bars.select(summary_sql.STATE_SCHEMA.names).cast(summary_sql.STATE_SCHEMA)
    report = RefreshReport(
        version, added, files, rows.num_rows, rebuilt.num_rows, ranges is not None, reason
    )
    return DayState(bars, version, settings.lake_uri), report


def published_tables(
    con: duckdb.DuckDBPyConnection, state: DayState, computed_at: dt.datetime
) -> dict[str, pa.Table]:
    con.register("state_bars", state.bars)
    return summary_sql.tables_from_state(con, computed_at)
