"""The lake on S3/MinIO and DuckDB over it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import duckdb
import pyarrow.fs as pafs
from dagster import ConfigurableResource

from finpipe import lake
from finpipe_dagster.resources.finpipe_settings import FinpipeSettings


class LakeS3Resource(ConfigurableResource):
    """S3/MinIO access for the lake: pyarrow's filesystem for data, boto3 for bulk deletes.

    Endpoint and keys come from the settings when used (never from resource config, so
    the UI never shows a key).
    """

    settings: FinpipeSettings
    max_attempts: int = 5

    def filesystem(self) -> pafs.S3FileSystem:
        return lake.s3_filesystem(self.settings.load())

    def client(self) -> Any:
        return lake.s3_client(self.settings.load(), max_attempts=self.max_attempts)

    def delete_keys(self, keys: list[str]) -> int:
        """Delete objects (keys without the bucket), 1000 per request; returns the count."""
        settings = self.settings.load()
        client = self.client()
        deleted = 0
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            response = client.delete_objects(
                Bucket=settings.s3_bucket,
                Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
            )
            errors = response.get("Errors") or []
            if errors:
                raise RuntimeError(f"S3 refused to delete {len(errors)} objects: {errors[:3]}")
            deleted += len(chunk)
        return deleted


class DuckDBResource(ConfigurableResource):
    """In-memory DuckDB connections that scan the lake through ``finpipe.lake``.

    No database file: summaries are published as Delta tables, so no writer ever holds a
    lock the dashboard would wait on.
    """

    settings: FinpipeSettings
    threads: int = 2
    memory_limit: str = "1GB"

    def connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        con.execute(f"SET threads = {int(self.threads)}")
        con.execute("SET memory_limit = ?", [self.memory_limit])
        con.execute("SET TimeZone = 'UTC'")
        return con

    def with_lake(self, days: Iterable[dt.date] | None) -> duckdb.DuckDBPyConnection:
        """A connection whose view ``processed_trades`` holds the given days (all if None)."""
        return lake.duckdb_with_lake(self.settings.load(), days, connection=self.connect())
