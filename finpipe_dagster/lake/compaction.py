"""``compacted_trades``: a closed day's small batch files rewritten as one file per symbol.

For each (day, symbol) partition folder: read the objects that make up the table there
(``contracts.visible_object_names``: batch files, and an earlier compacted file when a
late batch arrived after it), drop rows seen twice by Kafka coordinates, sort by trade
time and offset, write ``compacted-upto-<last batch id>.parquet`` in one PUT, then delete
the objects it replaces. Readers switch atomically to the new file the moment it exists
(it names the last batch it holds, so they skip the older objects), and a run that stops
between the write and the deletes is finished by the next one. Open days are refused:
Spark still writes to them.
"""

import datetime as dt
import io
import posixpath
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from finpipe import contracts
from finpipe.settings import Settings
from finpipe_dagster.lake.assets import PROCESSED_TRADES
from finpipe_dagster.partitions import partition_days, today_utc
from finpipe_dagster.resources import FinpipeSettings, LakeS3Resource


@dataclass(frozen=True)
class CompactionReport:
    files_before: int
    files_after: int
    rows: int
    duplicates_dropped: int


def partition_files(fs: pafs.FileSystem, settings: Settings, day: dt.date) -> dict[str, list[str]]:
    """Every table object of one day, by symbol folder (all of them, leftovers included)."""
    base = f"{settings.s3_bucket}/{settings.lake_prefix}/trade_date={day.isoformat()}"
    by_folder: dict[str, list[str]] = defaultdict(list)
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    for info in fs.get_file_info(selector):
        name = posixpath.basename(info.path)
        if info.type == pafs.FileType.File and contracts.parse_lake_object_name(name):
            by_folder[posixpath.dirname(info.path)].append(info.path)
    return {folder: sorted(paths) for folder, paths in sorted(by_folder.items())}


def compact_folder(fs: pafs.FileSystem, paths: list[str]) -> tuple[str, int, int]:
    """Write the compacted file of the folder's visible objects ``paths``.

    Returns (its path, rows, duplicates dropped)."""
    tables = [pq.read_table(path, filesystem=fs, schema=contracts.LAKE_SCHEMA) for path in paths]
    table = pa.concat_tables(tables)
    before = table.num_rows
    table = table.sort_by(
        [
            ("kafka_partition", "ascending"),
            ("kafka_offset", "ascending"),
            ("processed_ts", "descending"),
        ]
    )
    keys = pc.add(
        pc.multiply(table["kafka_partition"].cast(pa.int64()), pa.scalar(1 << 48, pa.int64())),
        table["kafka_offset"],
    )
    keep = _first_of_runs(keys)
    table = table.filter(keep).sort_by([("trade_ts", "ascending"), ("kafka_offset", "ascending")])
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", row_group_size=1_000_000)
    upto = max(_parsed(path).batch_id for path in paths)
    target = f"{posixpath.dirname(paths[0])}/{contracts.compacted_file_name(upto)}"
    with fs.open_output_stream(target) as out:
        out.write(buffer.getvalue())
    return target, table.num_rows, before - table.num_rows


def _parsed(path: str) -> contracts.LakeObjectName:
    found = contracts.parse_lake_object_name(posixpath.basename(path))
    assert found is not None, path
    return found


def _first_of_runs(sorted_keys: pa.ChunkedArray) -> pa.Array:
    values = sorted_keys.combine_chunks()
    if len(values) == 0:
        return pa.array([], pa.bool_())
    previous = pa.concat_arrays([pa.array([-1], pa.int64()), values.slice(0, len(values) - 1)])
    return pc.not_equal(values, previous)


def compact_day(
    settings: Settings, fs: pafs.FileSystem, lake_s3: LakeS3Resource, day: dt.date
) -> CompactionReport:
    folders = partition_files(fs, settings, day)
    before = sum(len(p) for p in folders.values())
    rows = dropped = 0
    for paths in folders.values():
        by_name = {posixpath.basename(p): p for p in paths}
        visible = [by_name[n] for n in contracts.visible_object_names(by_name)]
        if len(visible) == 1 and _parsed(visible[0]).compacted:
            target = visible[0]  # compacted already; a stopped run may have left leftovers
            rows += pq.read_metadata(target, filesystem=fs).num_rows
        else:
            target, kept, duplicates = compact_folder(fs, visible)
            rows += kept
            dropped += duplicates
        # Only objects listed above: a batch written meanwhile stays (it is newer).
        stale = [p.split("/", 1)[1] for p in paths if p != target]
        if stale:
            lake_s3.delete_keys(stale)
    return CompactionReport(before, len(folders), rows, dropped)


def compacted_trades(
    context: AssetExecutionContext, finpipe: FinpipeSettings, lake_s3: LakeS3Resource
) -> MaterializeResult:
    settings = finpipe.load()
    fs = lake_s3.filesystem()
    days = partition_days(list(context.partition_keys))
    open_days = [d for d in days if d >= today_utc()]
    if open_days:
        raise Failure(
            f"refusing to compact {[d.isoformat() for d in open_days]}: Spark still writes to "
            "an open day; compact days before today (UTC)"
        )
    per_day = {}
    for day in days:
        report = compact_day(settings, fs, lake_s3, day)
        per_day[day.isoformat()] = report.__dict__
        context.log.info(f"compacted {day}: {report}")
    return MaterializeResult(
        metadata={
            "files_before": sum(r["files_before"] for r in per_day.values()),
            "files_after": sum(r["files_after"] for r in per_day.values()),
            "rows": sum(r["rows"] for r in per_day.values()),
            "duplicates_dropped": sum(r["duplicates_dropped"] for r in per_day.values()),
            "per_day": MetadataValue.json(per_day),
        }
    )


def compacted_trades_asset(partitions: PartitionsDefinition) -> AssetsDefinition:
    """The asset over the code location's daily partitions (built at load)."""
    return asset(
        deps=[PROCESSED_TRADES],
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        group_name="maintenance",
        kinds={"s3", "parquet"},
        description=(
            "Closed days of processed_trades rewritten as one compacted-upto-<batch>.parquet per "
            "symbol (the small batch files are deleted afterwards; a late batch is folded in "
            "by compacting its day again)."
        ),
    )(compacted_trades)
