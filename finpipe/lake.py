"""How finpipe reaches the lake: its Delta tables, and the object store under them.

The lake is two Delta Lake tables (``contracts.LAKE_TABLE``, ``contracts.REJECTS_TABLE``)
written with delta-rs. Every reader opens a *snapshot*: the table's log up to one version
names exactly the data files that make up the table then, so no reader sees a row twice or
a row that will not stay, whatever the writer and the maintenance jobs do meanwhile. Any
Delta reader (DuckDB, Spark, Polars, Trino, delta-rs) sees the same rows.

One snapshot's files outlive it by the tables' ``delta.deletedFileRetentionDuration``; a
reader slower than that finds a file gone: ``read_reloading`` runs its read once more on
a fresh snapshot.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from obstore.exceptions import NotFoundError as ObjectStoreNotFound

from finpipe import contracts
from finpipe.delta_storage import S3Access, storage_options
from finpipe.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


# --- the object store ------------------------------------------------------------------
#
# Every client below is built from one ``S3Access`` (``finpipe.delta_storage``: the
# settings', or the one the Dagster code location derives from its ``S3Resource``), so the
# endpoint, region and keys are resolved in one place. delta-rs (the tables) and obstore
# (``object_store``: the Delta log, the dashboard tail's small objects, the summaries' state)
# are the same Rust client. Two more remain, each for what the others do not do here:
# pyarrow's ``s3_filesystem`` streams Parquet (the Spark executors' writes, the dashboard
# tail's segment reads, the migration's reads of the old layout), and boto3's ``s3_client``
# makes the bucket (infra), lists one key (``MaxKeys``) and deletes in bulk (the migration).
# The Dagster code location uses neither: it has dagster-aws's ``S3Resource`` for boto3.


CLIENT_TIMEOUT_SECONDS = 30
"""One request to the store, and its retries, give up after this: the callers decide how
long to wait for a store that is away (the streaming sink within S3_WRITE_RETRY_SECONDS,
a reader on its next refresh), not the client's own three-minute retry default."""


def s3_filesystem(source: Settings | S3Access) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem (Parquet written and read as streams)."""
    access = source if isinstance(source, S3Access) else S3Access.from_settings(source)
    return pafs.S3FileSystem(
        access_key=access.access_key,
        secret_key=access.secret_key,
        endpoint_override=access.endpoint_url.split("://", 1)[1],
        scheme="https" if access.uses_tls else "http",
        region=access.region,
        connect_timeout=3,
        request_timeout=10,
    )


def object_store(
    source: Settings | S3Access,
    *,
    bucket: str | None = None,
    prefix: str | None = None,
    timeout_seconds: float = 10,
    connect_timeout_seconds: float = 3,
    max_retries: int = 0,
) -> Any:
    """An obstore ``S3Store`` of the bucket (the settings' unless ``bucket`` is given;
    under ``prefix`` when given): one GET per object, issued from Rust outside the GIL. No
    retries by default: its callers are interactive and retry on their next refresh."""
    from obstore.store import S3Store

    if isinstance(source, S3Access):
        access = source
        if bucket is None:
            raise ValueError("an object store from an S3Access needs its bucket")
    else:
        access, bucket = S3Access.from_settings(source), bucket or source.s3_bucket
    return S3Store(
        bucket,
        prefix=prefix,
        endpoint=access.endpoint_url,
        access_key_id=access.access_key,
        secret_access_key=access.secret_key,
        region=access.region,
        virtual_hosted_style_request=False,  # path style, as MinIO wants
        client_options={
            "allow_http": not access.uses_tls,
            "timeout": dt.timedelta(seconds=timeout_seconds),
            "connect_timeout": dt.timedelta(seconds=connect_timeout_seconds),
        },
        retry_config={
            "max_retries": max_retries,
            "retry_timeout": dt.timedelta(seconds=timeout_seconds),
        },
    )


def s3_client(
    source: Settings | S3Access,
    *,
    max_attempts: int = 3,
    connect_timeout: float = 5,
    read_timeout: float = 30,
) -> Any:
    """A boto3 S3 client for listing and object calls (path-style, as MinIO wants).
    Interactive readers pass short timeouts and one attempt, so they fail fast."""
    import boto3
    from botocore.config import Config

    access = source if isinstance(source, S3Access) else S3Access.from_settings(source)
    return boto3.client(
        "s3",
        endpoint_url=access.endpoint_url,
        aws_access_key_id=access.access_key,
        aws_secret_access_key=access.secret_key,
        region_name=access.region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        ),
    )


# --- the tables ------------------------------------------------------------------------


@dataclass(frozen=True)
class LakeTable:
    """Where one Delta table of the lake lives and how to reach it."""

    uri: str
    spec: contracts.TableSpec
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    access: S3Access | None = field(default=None, repr=False, compare=False)
    """How to reach the store an S3 table is in (the same as ``storage_options``)."""

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri or self.uri.startswith("file://")

    def open(self, version: int | None = None) -> DeltaTable | None:
        """A snapshot of the table (the newest, or ``version``); None: no table there yet."""
        try:
            return DeltaTable(self.uri, version=version, storage_options=dict(self.storage_options))
        except TableNotFoundError:
            return None

    def ensure(self) -> DeltaTable:
        """The table, created empty with the contract's schema, layout and properties when
        there is none (a no-op when it exists)."""
        return DeltaTable.create(
            self.uri,
            schema=self.spec.schema,
            partition_by=list(self.spec.partition_by),
            mode="ignore",
            name=self.spec.name,
            configuration=self.spec.configuration,
            storage_options=dict(self.storage_options),
        )

    def missing_properties(self, snapshot: DeltaTable) -> dict[str, str]:
        """The contract's properties that ``snapshot``'s table lacks (a table created
        before they were in the contract). A value set differently is not missing: an
        operator may have tuned it."""
        have = snapshot.metadata().configuration
        return {k: v for k, v in self.spec.configuration.items() if k not in have}

    @functools.cached_property
    def store(self) -> Any:
        """An obstore store rooted at the table (reads ``_delta_log`` entries)."""
        if self.is_local:
            from obstore.store import LocalStore

            return LocalStore(Path(self.uri.removeprefix("file://")))
        assert self.access is not None, "an S3 table carries its access"
        return object_store(self.access, bucket=self.bucket, prefix=self.key_prefix, max_retries=3)

    @property
    def bucket(self) -> str:
        """The bucket of an S3 table."""
        return urllib.parse.urlsplit(self.uri).netloc

    @property
    def key_prefix(self) -> str:
        """The table's key in its bucket (S3 tables)."""
        return urllib.parse.urlsplit(self.uri).path.lstrip("/")


def s3_table(
    settings: Settings, prefix: str, spec: contracts.TableSpec, access: S3Access | None = None
) -> LakeTable:
    """The table ``spec`` at ``prefix`` of the settings' bucket (reached with ``access``,
    default: the settings' endpoint and keys)."""
    access = access or S3Access.from_settings(settings)
    return LakeTable(
        f"s3://{settings.s3_bucket}/{prefix}",
        spec,
        storage_options(access, timeout_seconds=CLIENT_TIMEOUT_SECONDS, max_retries=2),
        access,
    )


def trades_table(settings: Settings, access: S3Access | None = None) -> LakeTable:
    """The lake table ``processed_trades`` at ``LAKE_PREFIX`` (reached with ``access``,
    default: the settings' endpoint and keys)."""
    return s3_table(settings, settings.lake_prefix, contracts.LAKE_TABLE, access)


def rejects_table(settings: Settings, access: S3Access | None = None) -> LakeTable:
    """The rejects table beside it (``<LAKE_PREFIX>_rejects``)."""
    return s3_table(
        settings, settings.lake_prefix + contracts.REJECTS_SUFFIX, contracts.REJECTS_TABLE, access
    )


def local_table(path: str | Path, spec: contracts.TableSpec = contracts.LAKE_TABLE) -> LakeTable:
    """A table on the local filesystem (tests, and tools that build one elsewhere first)."""
    return LakeTable(str(path), spec)


# --- reading ---------------------------------------------------------------------------


def day_filter(days: Iterable[dt.date] | None) -> list[tuple[str, str, Any]] | None:
    """delta-rs's file filter for the ``trade_date`` partitions of ``days`` (None: all)."""
    if days is None:
        return None
    return [("trade_date", "in", sorted({d.isoformat() for d in days}))]


def snapshot_dataset(
    snapshot: DeltaTable | None,
    spec: contracts.TableSpec,
    days: Iterable[dt.date] | None = None,
) -> ds.Dataset:
    """A pyarrow dataset of one snapshot's files of ``days`` (all when None), with the
    contract's schema. Each file's partition values and column bounds are its fragment's
    ``partition_expression``, so a filter on ``trade_ts`` skips files by their bounds."""
    if snapshot is None:
        return ds.dataset(spec.schema.empty_table())
    wanted = list(days) if days is not None else None
    if wanted is not None and not wanted:
        return ds.dataset(spec.schema.empty_table())
    return snapshot.to_pyarrow_dataset(file_pruning_predicate=_day_filter_for(spec, wanted))


def _day_filter_for(spec: contracts.TableSpec, days: list[dt.date] | None) -> Any:
    if days is None or "trade_date" not in spec.partition_by:
        return None
    return day_filter(days)


def lake_dataset(
    settings: Settings, dates: Iterable[dt.date] | None = None, *, version: int | None = None
) -> ds.Dataset:
    """The lake's rows of ``dates`` (all days when None) in the newest snapshot (or
    ``version``'s), as a pyarrow dataset: scanned lazily, with filter pushdown."""
    return snapshot_dataset(trades_table(settings).open(version), contracts.LAKE_TABLE, dates)


def rejects_dataset(settings: Settings) -> ds.Dataset:
    """Every reject the Spark query kept (the newest snapshot of the rejects table)."""
    return snapshot_dataset(rejects_table(settings).open(), contracts.REJECTS_TABLE)


def duckdb_with_lake(
    settings: Settings,
    dates: Iterable[dt.date] | None = None,
    *,
    connection: duckdb.DuckDBPyConnection | None = None,
    view_name: str = "processed_trades",
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection in which ``view_name`` scans the lake (lazily, with pushdown)."""
    con = connection or duckdb.connect()
    con.register(view_name, lake_dataset(settings, dates))
    return con


def lake_days(settings: Settings) -> list[dt.date]:
    """The days the lake holds rows of (from the newest snapshot's partitions)."""
    snapshot = trades_table(settings).open()
    if snapshot is None:
        return []
    return sorted({dt.date.fromisoformat(p["trade_date"]) for p in snapshot.partitions()})


@dataclass(frozen=True)
class TableFile:
    """One data file of a snapshot, as its log entry describes it."""

    path: str
    """Relative to the table, as the log names it: percent-encoded once more than the
    store names the file (``symbol=BINANCE%253ABTCUSDT``); ``store_path`` decodes it."""
    trade_date: dt.date
    symbol: str
    size: int
    rows: int
    min_trade_ts: dt.datetime | None
    max_trade_ts: dt.datetime | None
    modified: dt.datetime

    @property
    def store_path(self) -> str:
        """The file's key relative to the table, as the object store names it."""
        return urllib.parse.unquote(self.path)


def table_files(
    snapshot: DeltaTable | None, days: Iterable[dt.date] | None = None
) -> list[TableFile]:
    """The data files of ``snapshot`` (of ``days`` when given), from its log: no listing."""
    if snapshot is None:
        return []
    wanted = {d for d in days} if days is not None else None
    actions = pa.table(snapshot.get_add_actions(flatten=True))
    names = set(actions.column_names)
    files = []
    for row in actions.to_pylist():
        day = row["partition.trade_date"]
        if wanted is not None and day not in wanted:
            continue
        files.append(
            TableFile(
                path=row["path"],
                trade_date=day,
                symbol=row["partition.symbol"],
                size=row["size_bytes"],
                rows=row["num_records"] or 0,
                min_trade_ts=row["min.trade_ts"] if "min.trade_ts" in names else None,
                max_trade_ts=row["max.trade_ts"] if "max.trade_ts" in names else None,
                modified=dt.datetime.fromtimestamp(row["modification_time"] / 1000, dt.UTC),
            )
        )
    return files


# --- reading while maintenance removes replaced files ----------------------------------

# How a vanished file shows: pyarrow's own error, or its text inside another library's
# error (DuckDB re-raises what a pyarrow scan raised as its own exception type).
_VANISHED_TEXT = (
    "Path does not exist",
    "NoSuchKey",
    "NO_SUCH_KEY",
    "key does not exist",
    "Object at location",
)


def object_vanished(error: BaseException) -> bool:
    """True when ``error`` says a file a snapshot named is gone (removed meanwhile)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, FileNotFoundError | ObjectStoreNotFound):  # pyarrow's, obstore's
            return True
        response = getattr(current, "response", None)  # botocore's ClientError
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        if code in {"NoSuchKey", "404"}:
            return True
        if any(text in str(current) for text in _VANISHED_TEXT):
            return True
        current = current.__cause__ or current.__context__
    return False


def read_reloading(read: Callable[[], T], *, what: str = "lake read") -> T:
    """``read()``, run once more when a file of its snapshot vanished under it.

    ``read`` must open the table itself (``lake_dataset``, ``duckdb_with_lake``,
    ``LakeTable.open``): the second run opens the newest snapshot, whose files are there.
    Only once: two vanishings in a row mean something deletes files younger than the
    retention, which a retry would hide.
    """
    try:
        return read()
    except Exception as error:
        if not object_vanished(error):
            raise
        log.warning(
            "%s: a file vanished under the reader (%s); reading a newer snapshot", what, error
        )
        return read()
