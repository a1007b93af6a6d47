"""What the scheduled quality checks still have to read, so their cost does not grow with
the hour of day.

Per day, a small JSON object under the lake prefix (``_checks/trade_date=YYYY-MM-DD.json``;
the ``_`` keeps it out of the table) records what passed the checks already: per symbol
the newest batch id checked, per checked object and Kafka partition the range of offsets
it held, and whether the whole day passed after it closed. A scheduled run checks

* of today, the visible objects whose last batch id is above the symbol's recorded one
  (new batch files, or a segment they were folded into);
* a closed day, once in full (then it is ``complete``).

A duplicate by Kafka coordinates needs both copies in view: when the offsets of the new
objects meet the range of an older object still visible (not folded into a new one; a
replay, or a bug writing a record twice), that day is checked in full instead. The
record moves on only when every selected check passed, so a failure stays failing until
the data is repaired, and a fresh start (no record) checks the days in full.

The reconciliation with Kafka has its own record (``_checks/kafka.json``): per topic and
partition the offset below which every record was found in the lake. A run counts only the
offsets from there: it reads the footers of the visible objects (few, with the rolling
compaction), and the Parquet statistics skip the rows of the objects that hold only older
offsets, so it no longer reads every row of Kafka's retained range.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from finpipe import contracts, lake
from finpipe.settings import Settings, same_lake

CHECKS_DIR = "_checks"


@dataclass
class CheckedSpan:
    batch_ids: dict[str, int] = field(default_factory=dict)
    # per checked object: [symbol, first batch, last batch, partition, lowest, highest offset]
    offsets: list[list[Any]] = field(default_factory=list)
    complete: bool = False
    lake_uri: str = ""


def span_key(settings: Settings, day: dt.date) -> str:
    return (
        f"{settings.s3_bucket}/{settings.lake_prefix}/{CHECKS_DIR}/"
        f"trade_date={day.isoformat()}.json"
    )


def load_span(settings: Settings, fs: pafs.FileSystem, day: dt.date) -> CheckedSpan:
    try:
        with fs.open_input_stream(span_key(settings, day)) as found:
            raw = json.loads(found.read())
    except (FileNotFoundError, OSError):
        return CheckedSpan()
    span = CheckedSpan(
        {str(k): int(v) for k, v in raw.get("batch_ids", {}).items()},
        list(raw.get("offsets", [])),
        bool(raw.get("complete")),
        str(raw.get("lake", "")),
    )
    return span if same_lake(span.lake_uri, settings.lake_uri) else CheckedSpan()


def save_span(settings: Settings, fs: pafs.FileSystem, day: dt.date, span: CheckedSpan) -> None:
    body = {
        "batch_ids": span.batch_ids,
        "offsets": span.offsets,
        "complete": span.complete,
        "lake": settings.lake_uri,
    }
    with fs.open_output_stream(span_key(settings, day)) as out:
        out.write(json.dumps(body, sort_keys=True).encode())


@dataclass(frozen=True)
class DayToCheck:
    day: dt.date
    files: list[lake.LakeFile]  # what this run reads of the day
    full: bool
    span: CheckedSpan  # the record as it will be once these files passed


def day_to_check(
    settings: Settings, fs: pafs.FileSystem, day: dt.date, today: dt.date
) -> DayToCheck | None:
    """What a scheduled run checks of ``day`` (None: nothing new there)."""
    span = load_span(settings, fs, day)
    files = lake.list_lake_files(settings, [day], filesystem=fs)
    closed = day < today
    if closed and span.complete:
        return None
    new = [f for f in files if f.batch_id > span.batch_ids.get(f.symbol, -1)]
    full = closed or not span.batch_ids
    if not new and not full:
        return None
    ranges = _offset_ranges(files if full else new, fs)
    if not full:
        old = [f for f in files if f.batch_id <= span.batch_ids.get(f.symbol, -1)]
        full = _meets_old(ranges, old, span)
        if full:
            ranges = _offset_ranges(files, fs)
    chosen = files if full else new
    kept = [] if full else _still_visible(span.offsets, files)
    ids = {**span.batch_ids, **lake.batch_ids_by_symbol(files)}
    return DayToCheck(day, chosen, full, CheckedSpan(ids, kept + ranges, closed, settings.lake_uri))


def _offset_ranges(files: list[lake.LakeFile], fs: pafs.FileSystem) -> list[list[Any]]:
    """Per object and Kafka partition, the lowest and highest offset it holds."""
    if not files:
        return []
    table = lake.files_dataset(files, fs).to_table(
        columns=["kafka_partition", "kafka_offset", "__filename"]
    )
    grouped = table.group_by(["__filename", "kafka_partition"]).aggregate(
        [("kafka_offset", "min"), ("kafka_offset", "max")]
    )
    by_path = {f.path: f for f in files}
    found = []
    for path, partition, low, high in zip(
        grouped["__filename"].to_pylist(),
        grouped["kafka_partition"].to_pylist(),
        grouped["kafka_offset_min"].to_pylist(),
        grouped["kafka_offset_max"].to_pylist(),
        strict=True,
    ):
        name = contracts.parse_lake_object_name(by_path[path].name)
        assert name is not None
        found.append([by_path[path].symbol, name.first, name.batch_id, partition, low, high])
    return found


def _meets_old(ranges: list[list[Any]], old: list[lake.LakeFile], span: CheckedSpan) -> bool:
    """True when a new row's offset falls in a range an older, still visible object holds:
    a record the new objects repeat would be there (a duplicate needs both in view)."""
    held = _still_visible(span.offsets, old)
    for _, _, _, partition, low, high in ranges:
        for _, _, _, old_partition, old_low, old_high in held:
            if partition == old_partition and low <= old_high and old_low <= high:
                return True
    return False


def _still_visible(entries: list[list[Any]], files: list[lake.LakeFile]) -> list[list[Any]]:
    """The recorded ranges of objects inside one of ``files`` (by symbol and batch range)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for file in files:
        name = contracts.parse_lake_object_name(file.name)
        assert name is not None
        spans.setdefault(file.symbol, []).append((name.first, name.batch_id))
    return [
        e
        for e in entries
        if any(first <= e[1] and e[2] <= last for first, last in spans.get(e[0], []))
    ]


KAFKA_RECORD = "kafka.json"


def reconciled_key(settings: Settings) -> str:
    return f"{settings.s3_bucket}/{settings.lake_prefix}/{CHECKS_DIR}/{KAFKA_RECORD}"


def load_reconciled(settings: Settings, fs: pafs.FileSystem, topic: str) -> dict[int, int]:
    """Per Kafka partition of ``topic``: the offset below which the lake held every record
    the last time it was checked ({} with no record, or one of another lake)."""
    try:
        with fs.open_input_stream(reconciled_key(settings)) as found:
            raw = json.loads(found.read())
    except (FileNotFoundError, OSError):
        return {}
    if not same_lake(raw.get("lake"), settings.lake_uri):
        return {}
    return {int(p): int(o) for p, o in raw.get("topics", {}).get(topic, {}).items()}


def save_reconciled(
    settings: Settings, fs: pafs.FileSystem, topic: str, upto: dict[int, int]
) -> None:
    try:
        with fs.open_input_stream(reconciled_key(settings)) as found:
            raw = json.loads(found.read())
    except (FileNotFoundError, OSError):
        raw = {}
    topics = raw.get("topics", {}) if same_lake(raw.get("lake"), settings.lake_uri) else {}
    topics[topic] = {str(p): o for p, o in sorted(upto.items())}
    body = {"topics": topics, "lake": settings.lake_uri}
    with fs.open_output_stream(reconciled_key(settings)) as out:
        out.write(json.dumps(body, sort_keys=True).encode())
