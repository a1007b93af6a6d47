"""The one way finpipe reads the lake table ``processed_trades``.

Used by the asset checks, the DuckDB summaries and the dashboard alike. It lists the
objects of the wanted partitions and keeps, per partition folder, what
``contracts.visible_object_names`` says make up the table: the compacted objects no other
covers and the batch files they do not cover. So a compaction that has written its
object but not yet deleted the ones it replaced never shows a row twice, and a batch that
arrives after its range was compacted is not hidden. Any other object (``_``-prefixed
status files, temporary uploads) is not data.

A compaction keeps the objects it replaces for ``COMPACTION_GRACE_SECONDS``, so a reader
that listed before the switch can still read them. A reader slower than that finds an
object gone: ``read_relisting`` runs its read once more over a fresh listing, which
names the compacted file instead.

Outside readers follow the same convention (see ``docs/architecture.md``).
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from obstore.exceptions import NotFoundError as ObjectStoreNotFound

from finpipe import contracts
from finpipe.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


def s3_filesystem(settings: Settings) -> pafs.S3FileSystem:
    access, secret = settings.s3_credentials
    scheme = "https" if settings.s3_uses_tls else "http"
    return pafs.S3FileSystem(
        access_key=access,
        secret_key=secret,
        endpoint_override=settings.s3_endpoint_url.split("://", 1)[1],
        scheme=scheme,
        region=settings.s3_region,
        connect_timeout=3,
        request_timeout=10,
    )


def object_store(
    settings: Settings, *, timeout_seconds: float = 10, connect_timeout_seconds: float = 3
) -> Any:
    """An obstore ``S3Store`` of the bucket, for readers of many small objects.

    One GET per object, issued from Rust outside the GIL: pyarrow's S3 filesystem sends a
    HEAD before each object's GET, and its per-request client cost was most of reading a
    micro-batch object (``docs/benchmarks/dashboard.md``). One attempt, no retries: its
    callers are interactive and retry on their next refresh.
    """
    from obstore.store import S3Store

    access, secret = settings.s3_credentials
    return S3Store(
        settings.s3_bucket,
        endpoint=settings.s3_endpoint_url,
        access_key_id=access,
        secret_access_key=secret,
        region=settings.s3_region,
        virtual_hosted_style_request=False,  # path style, as MinIO wants
        client_options={
            "allow_http": not settings.s3_uses_tls,
            "timeout": dt.timedelta(seconds=timeout_seconds),
            "connect_timeout": dt.timedelta(seconds=connect_timeout_seconds),
        },
        retry_config={"max_retries": 0, "retry_timeout": dt.timedelta(seconds=timeout_seconds)},
    )


def s3_client(
    settings: Settings,
    *,
    max_attempts: int = 3,
    connect_timeout: float = 5,
    read_timeout: float = 30,
) -> Any:
    """A boto3 S3 client for listing and object calls (path-style, as MinIO wants).
    Interactive readers pass short timeouts and one attempt, so they fail fast."""
    import boto3
    from botocore.config import Config

    access, secret = settings.s3_credentials
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name=settings.s3_region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        ),
    )


@dataclass(frozen=True)
class LakeFile:
    path: str  # bucket/key, as pyarrow.fs names it
    trade_date: dt.date
    symbol: str
    size: int
    modified: dt.datetime | None = None  # the object store's LastModified

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def batch_id(self) -> int:
        """The batch id in the name: a batch file's own, a compacted file's last."""
        parsed = contracts.parse_lake_object_name(self.name)
        assert parsed is not None, self.path  # listings keep only the contract's names
        return parsed.batch_id


def _partition_values(relative: str) -> tuple[dt.date, str] | None:
    parts = relative.split("/")
    if len(parts) != 3 or not parts[0].startswith("trade_date="):
        return None
    if not parts[1].startswith("symbol=") or contracts.parse_lake_object_name(parts[2]) is None:
        return None
    try:
        day = dt.date.fromisoformat(parts[0].removeprefix("trade_date="))
    except ValueError:
        return None
    return day, contracts.symbol_from_partition_value(parts[1].removeprefix("symbol="))


def list_lake_files(
    settings: Settings,
    dates: Iterable[dt.date] | None = None,
    *,
    prefix: str | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> list[LakeFile]:
    """Every data file of the wanted days (all days when ``dates`` is None)."""
    return _visible(list_lake_objects(settings, dates, prefix=prefix, filesystem=filesystem))


def list_lake_objects(
    settings: Settings,
    dates: Iterable[dt.date] | None = None,
    *,
    prefix: str | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> list[LakeFile]:
    """Every object of the wanted days with a table name, leftovers of a compaction too."""
    fs = filesystem or s3_filesystem(settings)
    root = f"{settings.s3_bucket}/{prefix or settings.lake_prefix}"
    bases = (
        [f"{root}/trade_date={d.isoformat()}" for d in sorted(set(dates))]
        if dates is not None
        else [root]
    )
    found: list[LakeFile] = []
    for base in bases:
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            values = _partition_values(info.path[len(root) + 1 :])
            if values is not None:
                found.append(LakeFile(info.path, values[0], values[1], info.size or 0, info.mtime))
    return found


def lake_days(settings: Settings, *, filesystem: pafs.FileSystem | None = None) -> list[dt.date]:
    """The days that have a partition folder in the lake (one listing of the prefix)."""
    fs = filesystem or s3_filesystem(settings)
    root = f"{settings.s3_bucket}/{settings.lake_prefix}"
    days = set()
    for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        name = posixpath.basename(info.path)
        if info.type == pafs.FileType.Directory and name.startswith("trade_date="):
            try:
                days.add(dt.date.fromisoformat(name.removeprefix("trade_date=")))
            except ValueError:
                continue
    return sorted(days)


def batch_ids_by_symbol(files: Iterable[LakeFile]) -> dict[str, int]:
    """Per symbol, the newest batch the given (visible) files hold.

    One micro-batch writes one object per partition folder, and batch ids only grow, so
    a reader that recorded these ids knows exactly which batches it has seen: an object
    that lands in a folder later carries a higher id there.
    """
    newest: dict[str, int] = {}
    for file in files:
        newest[file.symbol] = max(newest.get(file.symbol, -1), file.batch_id)
    return dict(sorted(newest.items()))


def _visible(files: list[LakeFile]) -> list[LakeFile]:
    by_partition: dict[tuple[dt.date, str], dict[str, LakeFile]] = defaultdict(dict)
    for file in files:
        by_partition[(file.trade_date, file.symbol)][file.name] = file
    chosen: list[LakeFile] = []
    for key in sorted(by_partition):
        group = by_partition[key]
        chosen.extend(group[name] for name in contracts.visible_object_names(group))
    return chosen


def lake_dataset(
    settings: Settings,
    dates: Iterable[dt.date] | None = None,
    *,
    filesystem: pafs.FileSystem | None = None,
) -> ds.Dataset:
    """A pyarrow dataset over the chosen files, with the contract's schema."""
    fs = filesystem or s3_filesystem(settings)
    return files_dataset(list_lake_files(settings, dates, filesystem=fs), fs)


def files_dataset(files: Iterable[LakeFile], filesystem: pafs.FileSystem) -> ds.Dataset:
    """A pyarrow dataset over files already listed (``list_lake_files``)."""
    return ds.dataset(
        [f.path for f in files],
        schema=contracts.LAKE_SCHEMA,
        format="parquet",
        filesystem=filesystem,
    )


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


# --- reading while a compaction deletes what it replaced ------------------------------

# How a vanished object shows: pyarrow's own error, or its text inside another library's
# error (DuckDB re-raises what a pyarrow scan raised as its own exception type).
_VANISHED_TEXT = ("Path does not exist", "NoSuchKey", "NO_SUCH_KEY", "key does not exist")


def object_vanished(error: BaseException) -> bool:
    """True when ``error`` says an object that was listed is gone (deleted meanwhile)."""
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


def read_relisting(read: Callable[[], T], *, what: str = "lake read") -> T:
    """``read()``, run once more when an object it listed vanished under it.

    ``read`` must list the lake itself (``list_lake_files``, ``lake_dataset``,
    ``duckdb_with_lake``): the second run lists again and finds the compacted file that
    replaced the vanished objects. Only once: two vanishings in a row mean something
    deletes objects without a grace period, which a retry would hide.
    """
    try:
        return read()
    except Exception as error:
        if not object_vanished(error):
            raise
        log.warning("%s: an object vanished under the reader (%s); listing again", what, error)
        return read()
