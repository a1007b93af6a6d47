"""``compacted_trades``: a closed day's small batch files rewritten as one file per symbol.

For each (day, symbol) partition folder: read the objects that make up the table there
(``contracts.visible_object_names``: batch files, and an earlier compacted file when a
late batch arrived after it), drop rows seen twice by Kafka coordinates, sort by trade
time and offset, write ``compacted-upto-<last batch id>.parquet`` in one PUT. Readers
switch atomically to the new file the moment it exists (it names the last batch it holds,
so they skip the older objects). The objects it replaced stay for
``COMPACTION_GRACE_SECONDS`` after that switch, so a reader that listed before it can
finish; a later run deletes them (``expired_leftovers``). Open days are refused: Spark
still writes to them.

The asset depends on the day's summaries, so a run that builds both (``close_day_job``)
compacts only after the summaries were read, whatever the executor.
"""

import datetime as dt
import io
import posixpath
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from finpipe import contracts, lake, summaries
from finpipe.settings import Settings
from finpipe_dagster.lake.assets import PROCESSED_TRADES
from finpipe_dagster.partitions import partition_days, today_utc
from finpipe_dagster.resources import FinpipeSettings, LakeS3Resource

COMPACTED_TRADES = AssetKey("compacted_trades")


@dataclass(frozen=True)
class CompactionReport:
    files_before: int
    files_after: int
    rows: int
    duplicates_dropped: int
    leftovers_deleted: int = 0
    leftovers_kept: int = 0  # replaced objects still inside their grace period


def expired_leftovers(
    objects: Mapping[str, dt.datetime], now: dt.datetime, grace: dt.timedelta
) -> list[str]:
    """The names of one partition folder that a compaction may delete now, sorted.

    ``objects`` maps each object's name to its LastModified. An object the reading rule
    no longer shows has been hidden since the oldest compacted file that hides it was
    written (a batch file by one with ``upto >= id``, a compacted file by one with a
    higher ``upto``); it may go once that is ``grace`` ago.
    """
    parsed = {n: p for n in objects if (p := contracts.parse_lake_object_name(n)) is not None}
    compacted = [(p, objects[n]) for n, p in parsed.items() if p.compacted]
    visible = set(contracts.visible_object_names(parsed))
    expired = []
    for name, found in parsed.items():
        if name in visible:
            continue
        covering = [w for seg, w in compacted if seg != found and seg.covers(found)]
        # Hidden only by the overlap rule (no object holds its rows): never delete it.
        if covering and min(covering) <= now - grace:
            expired.append(name)
    return sorted(expired)


def partition_files(fs: pafs.FileSystem, settings: Settings, day: dt.date) -> dict[str, list[str]]:
    """Every table object of one day, by symbol folder (all of them, leftovers included)."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for file in lake.list_lake_objects(settings, [day], filesystem=fs):
        by_folder[posixpath.dirname(file.path)].append(file.path)
    return {folder: sorted(paths) for folder, paths in sorted(by_folder.items())}


def compact_folder(
    fs: pafs.FileSystem, paths: list[str], name: str | None = None
) -> tuple[str, int, int]:
    """Write the compacted file ``name`` of the folder's visible objects ``paths``
    (default: ``compacted-upto-<last>``, for a run over all of them).

    Returns (its path, rows, duplicates dropped)."""
    # One dataset over the objects: pyarrow reads them in parallel.
    table = ds.dataset(paths, schema=contracts.LAKE_SCHEMA, format="parquet", filesystem=fs)
    table = table.to_table()
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
    target = f"{posixpath.dirname(paths[0])}/{name or contracts.compacted_file_name(upto)}"
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
    """Compact each symbol folder of ``day``; over a fresh listing once if an object vanished
    (another run's deletes): each folder's result is the same whichever run writes it."""
    return lake.read_relisting(
        lambda: _compact_day_once(settings, fs, lake_s3, day), what=f"compaction of {day}"
    )


def _compact_day_once(
    settings: Settings, fs: pafs.FileSystem, lake_s3: LakeS3Resource, day: dt.date
) -> CompactionReport:
    folders: dict[str, dict[str, lake.LakeFile]] = defaultdict(dict)
    for file in lake.list_lake_objects(settings, [day], filesystem=fs):
        folders[posixpath.dirname(file.path)][file.name] = file
    grace = dt.timedelta(seconds=settings.compaction_grace_seconds)
    totals = CompactionReport(sum(len(f) for f in folders.values()), len(folders), 0, 0)
    for _, objects in sorted(folders.items()):
        totals = _add(totals, _compact_objects(fs, lake_s3, objects, grace))
    return totals


def _compact_objects(
    fs: pafs.FileSystem,
    lake_s3: LakeS3Resource,
    objects: dict[str, lake.LakeFile],
    grace: dt.timedelta,
) -> CompactionReport:
    """One folder: write its compacted file if needed, delete the leftovers past grace."""
    now = dt.datetime.now(dt.UTC)
    visible = [objects[n] for n in contracts.visible_object_names(objects)]
    written = {n: _utc(f.modified) or now for n, f in objects.items()}
    dropped = 0
    if len(visible) == 1 and _parsed(visible[0].path).compacted:
        target = visible[0].path  # compacted already: only leftovers may be due
        rows = pq.read_metadata(target, filesystem=fs).num_rows
    else:
        target, rows, dropped = compact_folder(fs, [f.path for f in visible])
        name = posixpath.basename(target)
        objects = {**objects, name: replace(visible[0], path=target)}
        written[name] = now  # it hides the others from now on
    # Only objects listed above: a batch written meanwhile stays (it is newer).
    expired = [objects[n].path.split("/", 1)[1] for n in expired_leftovers(written, now, grace)]
    if expired:
        lake_s3.delete_keys(expired)
    hidden = len(objects) - len(contracts.visible_object_names(objects))
    return CompactionReport(0, 0, rows, dropped, len(expired), hidden - len(expired))


def _add(a: CompactionReport, b: CompactionReport) -> CompactionReport:
    return CompactionReport(
        *(getattr(a, f) + getattr(b, f) for f in CompactionReport.__dataclass_fields__)
    )


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)


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
            "leftovers_deleted": sum(r["leftovers_deleted"] for r in per_day.values()),
            "leftovers_kept": sum(r["leftovers_kept"] for r in per_day.values()),
            "per_day": MetadataValue.json(per_day),
        }
    )


def compacted_trades_asset(partitions: PartitionsDefinition) -> AssetsDefinition:
    """The asset over the code location's daily partitions (built at load)."""
    return asset(
        # The summaries too: a run that builds both compacts after they read the day.
        deps=[PROCESSED_TRADES, *summaries.NAMES],
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        group_name="maintenance",
        kinds={"s3", "parquet"},
        description=(
            "Closed days of processed_trades rewritten as one compacted-upto-<batch>.parquet "
            "per symbol, after the day's summaries. The replaced batch files stay for "
            "COMPACTION_GRACE_SECONDS and a later run deletes them; a late batch is folded in "
            "by compacting its day again."
        ),
    )(compacted_trades)
