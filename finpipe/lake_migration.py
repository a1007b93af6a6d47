"""Converting a lake of the pre-Delta layout into the Delta tables, once.

Before the lake became a Delta table, ``processed_trades/`` held one Parquet object per
micro-batch and partition (``batch-<id>.parquet``) and compacted segments
(``compacted-<first>-<last>.parquet``, ``compacted-upto-<id>.parquet``), read by a rule
of finpipe's own: per partition folder, the compacted segments no other covers, and the
batch files they do not cover. Rejected records were under ``_rejects/``. This module
holds the last copy of that rule, to read such a lake exactly once more:

1. refuse while the Spark stream reports a fresh heartbeat (it writes the same prefix);
2. per day, read the rows by the old rule and append them to the Delta table in one commit
   whose metadata names the day (a rerun skips days already committed: resumable);
3. copy the rejects into the rejects table;
4. record ``(SPARK_APP_ID, highest old batch id)`` in the table, so the Spark checkpoint
   that wrote the old lake passes the start-up guard and its next batch is committed;
5. verify, per (day, symbol), that the table holds exactly the old rule's Kafka
   coordinates; only then delete the old objects, by name.

6. convert each summary's old objects (``<name>/trade_date=…/data.parquet``) into its
   Delta table, one predicate overwrite per day, and delete them; the incremental
   summaries' old state objects go too (today's state is rebuilt from the lake).
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import CommitProperties, Transaction, write_deltalake

from finpipe import contracts, health, lake, summaries
from finpipe.settings import Settings

MIGRATED_DAY_KEY = "finpipe.migrated_day"
REJECTS_DONE_KEY = "finpipe.migrated_rejects"
OLD_REJECTS_DIR = "_rejects"
OLD_CHECKS_DIR = "_checks"
FRESH_HEARTBEAT_SECONDS = 60.0

_BATCH = re.compile(r"^batch-(\d{12})\.parquet$")
_UPTO = re.compile(r"^compacted-upto-(\d{12})\.parquet$")
_SEGMENT = re.compile(r"^compacted-(\d{12})-(\d{12})\.parquet$")


class MigrationError(Exception):
    """The lake cannot be migrated now; the message says why and what to do."""


class OldName(NamedTuple):
    compacted: bool
    first: int
    last: int

    def covers(self, other: OldName) -> bool:
        return self.first <= other.first and other.last <= self.last


def parse_old_name(name: str) -> OldName | None:
    """What an object of the old layout is, from its base name; None: not table data."""
    if found := _BATCH.match(name):
        return OldName(False, int(found[1]), int(found[1]))
    if found := _UPTO.match(name):
        return OldName(True, 0, int(found[1]))
    if found := _SEGMENT.match(name):
        first, last = int(found[1]), int(found[2])
        return OldName(True, first, last) if first <= last else None
    return None


def is_pre_delta_file(path: str) -> bool:
    """A data file of the pre-Delta layout, by its path: a batch or compacted object of the
    lake, a summary's day object. No Delta commit names one, yet it is not an orphan: it
    holds rows that the migration has still to convert."""
    name = path.rsplit("/", 1)[-1]
    return parse_old_name(name) is not None or name == summaries.PRE_DELTA_OBJECT


def visible_names(names: Iterable[str]) -> list[str]:
    """The old reading rule over one partition folder: the compacted segments no other
    covers (newest last batch first, skipping any that overlaps one taken), then every
    batch file no taken segment covers."""
    parsed = {n: p for n in names if (p := parse_old_name(n)) is not None}
    segments = sorted(
        (n for n, p in parsed.items() if p.compacted),
        key=lambda n: (-parsed[n].last, parsed[n].first, n),
    )
    taken: list[str] = []
    for name in segments:
        segment = parsed[name]
        overlaps = any(
            parsed[t].first <= segment.last and segment.first <= parsed[t].last for t in taken
        )
        if not overlaps:
            taken.append(name)
    batches = [
        n
        for n, p in parsed.items()
        if not p.compacted and not any(parsed[t].covers(p) for t in taken)
    ]
    return sorted(taken + batches)


@dataclass
class OldLake:
    """The old layout's objects under the lake prefix, by (day, symbol folder)."""

    folders: dict[tuple[dt.date, str], list[str]] = field(default_factory=dict)
    rejects: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # _checks and other state objects
    highest_batch: int = -1

    @property
    def empty(self) -> bool:
        return not self.folders and not self.rejects and not self.others

    def keys(self) -> list[str]:
        """Every key the migration deletes at the end."""
        data = sorted(k for keys in self.folders.values() for k in keys)
        return data + self.rejects + self.others


def _is_old_key(relative: str) -> bool:
    """A key (relative to the lake prefix) of the old layout's objects."""
    if relative.startswith((f"{OLD_REJECTS_DIR}/", f"{OLD_CHECKS_DIR}/")):
        return True
    return parse_old_name(relative.rsplit("/", 1)[-1]) is not None and "/" in relative


def old_layout_keys(settings: Settings, client: Any, limit: int | None = None) -> list[str]:
    """Keys of the old layout under the lake prefix (the first ``limit`` found)."""
    prefix = f"{settings.lake_prefix}/"
    found: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=settings.s3_bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix) :]
            if relative.startswith("_delta_log/"):
                continue
            if _is_old_key(relative):
                found.append(item["Key"])
                if limit is not None and len(found) >= limit:
                    return found
    return found


def scan_old_lake(settings: Settings, client: Any) -> OldLake:
    old = OldLake()
    prefix = f"{settings.lake_prefix}/"
    folders: dict[tuple[dt.date, str], list[str]] = defaultdict(list)
    for key in old_layout_keys(settings, client):
        relative = key[len(prefix) :]
        if relative.startswith(f"{OLD_REJECTS_DIR}/"):
            old.rejects.append(key)
            continue
        if relative.startswith(f"{OLD_CHECKS_DIR}/"):
            old.others.append(key)
            continue
        parts = relative.split("/")
        name = parse_old_name(parts[-1])
        if len(parts) != 3 or name is None or not parts[0].startswith("trade_date="):
            old.others.append(key)
            continue
        day = dt.date.fromisoformat(parts[0].removeprefix("trade_date="))
        symbol = urllib.parse.unquote(parts[1].removeprefix("symbol="))
        folders[(day, symbol)].append(key)
        old.highest_batch = max(old.highest_batch, name.last)
    for key in old.rejects:
        name = parse_old_name(key.rsplit("/", 1)[-1])
        if name is not None:
            old.highest_batch = max(old.highest_batch, name.last)
    old.folders = dict(folders)
    return old


def _old_day_rows(settings: Settings, old: OldLake, day: dt.date) -> pa.Table:
    fs = lake.s3_filesystem(settings)
    paths = []
    for (folder_day, _symbol), keys in sorted(old.folders.items()):
        if folder_day != day:
            continue
        by_name = {k.rsplit("/", 1)[-1]: k for k in keys}
        paths += [f"{settings.s3_bucket}/{by_name[n]}" for n in visible_names(by_name)]
    if not paths:
        return contracts.LAKE_SCHEMA.empty_table()
    table = ds.dataset(paths, format="parquet", filesystem=fs).to_table()
    return table.select(contracts.LAKE_SCHEMA.names).cast(contracts.LAKE_SCHEMA)


def _migrated_days(history: list[dict[str, Any]]) -> set[str]:
    return {str(h[MIGRATED_DAY_KEY]) for h in history if MIGRATED_DAY_KEY in h}


@dataclass
class MigrationReport:
    days: int = 0
    rows: int = 0
    rejects: int = 0
    summary_days: int = 0
    deleted_objects: int = 0
    skipped_days: list[str] = field(default_factory=list)


def migrate(
    settings: Settings,
    client: Any | None = None,
    *,
    say: Callable[[str], None] = print,
    stop_after_days: int | None = None,
) -> MigrationReport:
    """Convert the old layout under ``LAKE_PREFIX`` into the Delta tables (see the module).

    ``stop_after_days`` stops after converting that many days (a test of resuming)."""
    beat = health.read_health(settings, health.SPARK)
    age = health.heartbeat_age_seconds(beat)
    live = beat is not None and not beat.get(health.FINAL_KEY)
    if live and age is not None and age < FRESH_HEARTBEAT_SECONDS:
        raise MigrationError(
            f"the Spark stream reported {age:.0f} s ago: it writes the lake. Stop it first "
            "(`make down`), then run the migration again."
        )
    client = client or lake.s3_client(settings)
    report = MigrationReport()
    old = scan_old_lake(settings, client)
    report.summary_days = _migrate_summaries(settings, client, say)
    if old.empty:
        if not report.summary_days:
            say(f"{settings.lake_uri} holds nothing of the pre-Delta layout: nothing to migrate")
        return report
    trades = lake.trades_table(settings)
    table = trades.ensure()
    done = _migrated_days(table.history())
    days = sorted({day for day, _ in old.folders})
    say(f"migrating {len(days)} day(s) of {settings.lake_uri} to a Delta table")
    for day in days:
        if day.isoformat() in done:
            report.skipped_days.append(day.isoformat())
            continue
        if stop_after_days is not None and report.days >= stop_after_days:
            return report
        rows = _old_day_rows(settings, old, day)
        write_deltalake(
            table,
            rows,
            mode="append",
            commit_properties=CommitProperties(custom_metadata={MIGRATED_DAY_KEY: day.isoformat()}),
        )
        table.update_incremental()
        report.days += 1
        report.rows += rows.num_rows
        say(f"  {day}: {rows.num_rows} rows")
    if old.rejects:
        report.rejects = _migrate_rejects(settings, old)
    if old.highest_batch >= 0:
        _record_spark_batch(table, old.highest_batch)
    _verify(settings, old, days)
    report.deleted_objects = _delete(settings, client, old.keys())
    say(
        f"migrated {report.days} day(s), {report.rows} rows, {report.rejects} rejects, "
        f"{report.summary_days} summary partition(s); deleted {report.deleted_objects} "
        "objects of the old layout."
    )
    return report


def _migrate_summaries(settings: Settings, client: Any, say: Callable[[str], None]) -> int:
    """Each summary's pre-Delta day objects into its Delta table, then deleted (a day
    already in the table, from a rerun or a newer publish, keeps the table's rows)."""
    fs = lake.s3_filesystem(settings)
    converted = 0
    for name in summaries.NAMES:
        days = summaries.pre_delta_days(settings, name)
        if not days:
            continue
        table = summaries.open_table(settings, name)
        present = set(summaries.published_days(table)) if table is not None else set()
        source = summaries.LakeState(settings.lake_uri)
        keys = []
        for day in days:
            key = (
                f"{settings.summaries_prefix}/{name}/{summaries.PARTITION_COLUMN}="
                f"{day.isoformat()}/{summaries.PRE_DELTA_OBJECT}"
            )
            if day not in present:
                rows = pq.read_table(f"{settings.s3_bucket}/{key}", filesystem=fs)
                summaries.publish(settings, name, day, rows, source=source)
                converted += 1
            keys.append(key)
        _delete(settings, client, keys)
        say(f"  summaries {name}: {len(days)} day(s) converted")
    state_keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=settings.s3_bucket, Prefix=f"{settings.summaries_prefix}/_state/"
        )
        for item in page.get("Contents", [])
    ]
    _delete(settings, client, state_keys)
    return converted


def _migrate_rejects(settings: Settings, old: OldLake) -> int:
    rejects = lake.rejects_table(settings)
    table = rejects.ensure()
    if any(REJECTS_DONE_KEY in h for h in table.history()):
        return 0
    fs = lake.s3_filesystem(settings)
    paths = [f"{settings.s3_bucket}/{k}" for k in old.rejects if k.endswith(".parquet")]
    if not paths:
        return 0
    rows = ds.dataset(paths, format="parquet", filesystem=fs).to_table()
    processed = pc.cast(rows["processed_ts"], contracts.LAKE_TS)
    rows = rows.set_column(
        rows.schema.get_field_index("processed_ts"), "processed_ts", processed
    ).append_column("processed_date", pc.cast(processed, pa.date32()))
    rows = rows.select(contracts.REJECTS_SCHEMA.names).cast(contracts.REJECTS_SCHEMA)
    write_deltalake(
        table,
        rows,
        mode="append",
        commit_properties=CommitProperties(custom_metadata={REJECTS_DONE_KEY: "true"}),
    )
    return rows.num_rows


def _record_spark_batch(table: Any, batch_id: int) -> None:
    """The old lake's highest batch as the query's transaction: its checkpoint passes the
    guard, and its next batch (a higher id) is committed, not taken for a replay."""
    if (table.transaction_version(contracts.SPARK_APP_ID) or -1) >= batch_id:
        return
    write_deltalake(
        table,
        contracts.LAKE_SCHEMA.empty_table(),
        mode="append",
        commit_properties=CommitProperties(
            app_transactions=[Transaction(contracts.SPARK_APP_ID, batch_id)]
        ),
    )


def _verify(settings: Settings, old: OldLake, days: list[dt.date]) -> None:
    """Per (day, symbol), the table's Kafka coordinates are exactly the old rule's."""
    coords = ["symbol", "kafka_partition", "kafka_offset"]
    for day in days:
        expected = _old_day_rows(settings, old, day).select(coords)
        found = lake.lake_dataset(settings, [day]).to_table(columns=coords)
        want = sorted(expected.to_pylist(), key=lambda r: tuple(r.values()))
        have = sorted(found.to_pylist(), key=lambda r: tuple(r.values()))
        if want != have:
            raise MigrationError(
                f"{day}: the Delta table holds {found.num_rows} rows where the old layout "
                f"holds {expected.num_rows}; nothing was deleted. Run the migration again, "
                "or report it with both counts."
            )


def _delete(settings: Settings, client: Any, keys: list[str]) -> int:
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        client.delete_objects(
            Bucket=settings.s3_bucket,
            Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
        )
    return len(keys)


OLD_LAYOUT_MESSAGE = (
    "the lake {uri} is in the pre-Delta layout (e.g. {key}): run `make migrate-lake` "
    "(with the platform down) to convert it into a Delta table once; see "
    "docs/operations.md, 'Migrating a lake of the pre-Delta layout'."
)


def old_layout_problem(settings: Settings, client: Any | None = None) -> str | None:
    """Why the lake cannot be used as it is (None: it can). Only a lake without a Delta
    table is listed, so a start costs nothing once the table exists."""
    if lake.trades_table(settings).open() is not None:
        return None
    keys = old_layout_keys(settings, client or lake.s3_client(settings), limit=1)
    return OLD_LAYOUT_MESSAGE.format(uri=settings.lake_uri, key=keys[0]) if keys else None
