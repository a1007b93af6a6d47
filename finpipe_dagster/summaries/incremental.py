"""A day's summaries kept up to date from what changed in the lake since the last refresh.

The durable state of a day is one Parquet object beside the summaries,
``<summaries_prefix>/_state/trade_date=YYYY-MM-DD/data.parquet``: the day's 1-minute bars
with a few more columns (``sql.STATE_BAR_EXTRA``), and in its Parquet metadata the lake
it was read from and, per symbol, the newest batch id it holds (the watermark). A
refresh

1. lists the day (the reading rule) and takes the objects whose last batch id is above
   the symbol's watermark: new batch files, or a segment they were folded into;
2. reads them, and notes the (symbol, minute)s their trades fall in;
3. for those minutes only, reads the older objects that held trades of them (the state
   records the range of batch ids each minute's trades came from; an object whose range
   meets it may hold some), so every affected minute is rebuilt from all its trades;
4. replaces those minutes in the state and derives the three published tables from it.

A day built from nothing (the close, a backfill, a late-data rebuild) runs the same steps
with an empty state, so every object is new: the bars of a minute come from the same
trades summed in the same order either way, and the tables derived from equal bars are
equal. The state is written after the tables it describes: a run that stops in between
leaves an older state, and the next refresh reads the same new objects again.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections import defaultdict
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from finpipe import contracts, lake
from finpipe.settings import Settings, same_lake
from finpipe_dagster.summaries import sql as summary_sql

STATE_NAME = "_state"
_WATERMARK = b"finpipe.lake_batch_ids"
_LAKE = b"finpipe.lake"
_SRC = pa.schema([("path", pa.string()), ("src_first", pa.int64()), ("src_last", pa.int64())])


@dataclass(frozen=True)
class DayState:
    bars: pa.Table
    watermark: dict[str, int]
    lake_uri: str


@dataclass(frozen=True)
class RefreshReport:
    objects_listed: int
    objects_read: int
    minutes_rebuilt: int
    incremental: bool


def state_key(settings: Settings, day: dt.date) -> str:
    """bucket/key of a day's state object, as pyarrow.fs names it."""
    return (
        f"{settings.s3_bucket}/{settings.summaries_prefix}/{STATE_NAME}/"
        f"trade_date={day.isoformat()}/data.parquet"
    )


def load_state(settings: Settings, fs: pafs.FileSystem, day: dt.date) -> DayState | None:
    path = state_key(settings, day)
    try:
        table = pq.read_table(path, filesystem=fs)
    except FileNotFoundError:
        return None
    meta = table.schema.metadata or {}
    if _WATERMARK not in meta or _LAKE not in meta:
        return None
    watermark = {str(k): int(v) for k, v in json.loads(meta[_WATERMARK]).items()}
    return DayState(table.replace_schema_metadata(None), watermark, meta[_LAKE].decode())


def save_state(settings: Settings, fs: pafs.FileSystem, day: dt.date, state: DayState) -> None:
    table = state.bars.replace_schema_metadata(
        {_WATERMARK: json.dumps(state.watermark, sort_keys=True), _LAKE: state.lake_uri}
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    with fs.open_output_stream(state_key(settings, day)) as out:
        out.write(buffer.getvalue())


def _sources(files: list[lake.LakeFile]) -> pa.Table:
    ranges = [contracts.parse_lake_object_name(f.name) for f in files]
    return pa.table(
        {
            "path": [f.path for f in files],
            "src_first": [r.first for r in ranges],  # type: ignore[union-attr]
            "src_last": [r.batch_id for r in ranges],  # type: ignore[union-attr]
        },
        schema=_SRC,
    )


def _register_rows(
    con: duckdb.DuckDBPyConnection, view: str, files: list[lake.LakeFile], fs: pafs.FileSystem
) -> None:
    """``view``: the trades of ``files``, each with its object's batch-id range."""
    dataset = lake.files_dataset(files, fs)
    table = dataset.to_table(columns=[*contracts.LAKE_SCHEMA.names, "__filename"])
    con.register(f"{view}_raw", table)
    con.register(f"{view}_src", _sources(files))
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT r.* EXCLUDE (__filename), "
        f"s.src_first, s.src_last FROM {view}_raw AS r JOIN {view}_src AS s "
        "ON r.__filename = s.path"
    )


def _older_objects(con: duckdb.DuckDBPyConnection, old: list[lake.LakeFile]) -> list[lake.LakeFile]:
    """Of ``old``, those whose batch range meets a range an affected minute came from."""
    ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for symbol, low, high in con.execute(
        "SELECT s.symbol, s.min_batch, s.max_batch FROM state_old AS s "
        "JOIN affected USING (symbol, minute)"
    ).fetchall():
        ranges[symbol].append((int(low), int(high)))
    chosen = []
    for file in old:
        found = contracts.parse_lake_object_name(file.name)
        assert found is not None
        if any(low <= found.batch_id and found.first <= high for low, high in ranges[file.symbol]):
            chosen.append(file)
    return chosen


def refresh(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    fs: pafs.FileSystem,
    files: list[lake.LakeFile],
    state: DayState | None,
) -> tuple[DayState, RefreshReport]:
    """The day's new state from its visible ``files`` and its previous ``state``
    (None, or a state of another lake: build the day from all its files)."""
    if state is not None and not same_lake(state.lake_uri, settings.lake_uri):
        state = None
    watermark = state.watermark if state else {}
    new = [f for f in files if f.batch_id > watermark.get(f.symbol, -1)]
    old = [f for f in files if f.batch_id <= watermark.get(f.symbol, -1)]
    empty = summary_sql.STATE_SCHEMA.empty_table()
    con.register("state_old", state.bars if state else empty)
    if not new:
        report = RefreshReport(len(files), 0, 0, state is not None)
        return state or DayState(empty, {}, settings.lake_uri), report
    _register_rows(con, "new_rows", new, fs)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE affected AS SELECT DISTINCT symbol, "
        "to_timestamp(epoch_ms(trade_ts) // 60000 * 60) AS minute FROM new_rows"
    )
    older = _older_objects(con, old)
    if older:
        _register_rows(con, "old_rows", older, fs)
    union = "SELECT * FROM new_rows" + (" UNION ALL SELECT * FROM old_rows" if older else "")
    con.execute(
        "CREATE OR REPLACE TEMP VIEW day_rows AS SELECT * FROM ("
        + union
        + ") AS t SEMI JOIN affected AS a ON t.symbol = a.symbol "
        "AND to_timestamp(epoch_ms(t.trade_ts) // 60000 * 60) = a.minute"
    )
    rebuilt = con.sql(summary_sql.STATE_BARS_SQL).to_arrow_table()
    con.register("state_new", rebuilt)
    bars = con.sql(
        "SELECT * FROM (SELECT * FROM state_old ANTI JOIN affected USING (symbol, minute) "
        "UNION ALL BY NAME SELECT * FROM state_new) ORDER BY symbol, minute"
    ).to_arrow_table()
    bars = bars.select(summary_sql.STATE_SCHEMA.names).cast(summary_sql.STATE_SCHEMA)
    ids = {**watermark}
    for symbol, batch in lake.batch_ids_by_symbol(files).items():
        ids[symbol] = max(batch, ids.get(symbol, -1))
    report = RefreshReport(len(files), len(new) + len(older), rebuilt.num_rows, state is not None)
    return DayState(bars, dict(sorted(ids.items())), settings.lake_uri), report


def published_tables(
    con: duckdb.DuckDBPyConnection, state: DayState, computed_at: dt.datetime
) -> dict[str, pa.Table]:
    con.register("state_bars", state.bars)
    return summary_sql.tables_from_state(con, computed_at)
