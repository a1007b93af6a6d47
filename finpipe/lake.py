"""The one way finpipe reads the lake table ``processed_trades``.

Used by the asset checks, the DuckDB summaries and the dashboard alike. It lists the
objects of the wanted partitions and keeps, per partition folder, what
``contracts.visible_object_names`` says make up the table: the newest compacted file and
the batch files written after it. So a compaction that has written its file but not yet
deleted the small ones never shows a row twice, and a batch that arrives after its day
was compacted is not hidden. Any other object (``_``-prefixed status files, temporary
uploads) is not data.

Outside readers follow the same convention (see ``docs/architecture.md``).
"""

from __future__ import annotations

import datetime as dt
import posixpath
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from finpipe import contracts
from finpipe.settings import Settings


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

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


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
                found.append(LakeFile(info.path, values[0], values[1], info.size or 0))
    return _visible(found)


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
    files = list_lake_files(settings, dates, filesystem=fs)
    return ds.dataset(
        [f.path for f in files], schema=contracts.LAKE_SCHEMA, format="parquet", filesystem=fs
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
