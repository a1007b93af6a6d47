"""One way to the object store: dagster-aws's ``S3Resource``, and the lake on it.

``s3_resource(settings)`` is the code location's one ``S3Resource``: endpoint, region and TLS
from finpipe's settings, set once when the code location loads. ``LakeTables`` is built on it
and is what assets, checks, ops and sensors use: the endpoint and region of its ``S3Resource``
and the keys become one ``finpipe.delta_storage.S3Access``, from which come delta-rs's
storage options (``finpipe.delta_storage.storage_options``, the one definition), the lake's
tables (``finpipe.lake.trades_table``/``rejects_table`` and ``finpipe.summaries.summary_table``,
whose obstore stores read the Delta log), obstore stores of the bucket (the summaries' state
objects), DuckDB connections over the lake and, where an S3 API call is needed, a boto3
client from ``S3Resource.get_client``.

The keys are never resource configuration. The Dagster UI shows every resource's configured
values; a key set as a plain value would be shown, and an ``EnvVar`` (shown by its name
only) is resolved from the process environment alone, while finpipe's settings read the keys
from the environment, from the env file (``FINPIPE_ENV_FILE``, default ``.env``) and, for a
MinIO on loopback, fall back to MinIO's local default. So ``S3Resource``'s key fields stay
unset, and ``LakeTables`` resolves the keys from the settings each time it is used
(``Settings.s3_credentials``): correct for all three sources, and nothing the UI shows holds
them. An operator who sets the key fields anyway (as ``EnvVar``s) is obeyed: both set, they
win over the settings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import duckdb
import pyarrow.dataset as ds
from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource

from finpipe import contracts, lake, summaries
from finpipe.delta_storage import S3Access, StorageOptions, storage_options
from finpipe.settings import Settings
from finpipe_dagster.resources.finpipe_settings import FinpipeSettings


def s3_resource(settings: Settings) -> S3Resource:
    """The code location's ``S3Resource``: where the store is, never its keys."""
    return S3Resource(
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        use_ssl=settings.s3_uses_tls,
    )


class LakeTables(ConfigurableResource):
    """The lake's Delta tables and everything else finpipe's Dagster code reads or writes in
    the object store, through the one ``S3Resource``.

    DuckDB connections are in memory: summaries are published as Delta tables, so no writer
    ever holds a database lock the dashboard would wait on.
    """

    settings: FinpipeSettings
    s3: S3Resource
    duckdb_threads: int = 2
    duckdb_memory_limit: str = "1GB"

    # --- the store ---------------------------------------------------------------------

    def access(self) -> S3Access:
        """The ``S3Resource``'s endpoint and region with the keys (module docstring)."""
        settings = self.settings.load()
        key, secret = self.s3.aws_access_key_id, self.s3.aws_secret_access_key
        if key is None or secret is None:
            key, secret = settings.s3_credentials
        return S3Access(
            self.s3.endpoint_url or settings.s3_endpoint_url,
            self.s3.region_name or settings.s3_region,
            key,
            secret,
        )

    def storage_options(self, **kwargs: Any) -> StorageOptions:
        """delta-rs's storage options (``timeout_seconds``, ``max_retries`` as in
        ``finpipe.delta_storage.storage_options``)."""
        return storage_options(self.access(), **kwargs)

    def store(self, prefix: str | None = None, *, max_retries: int = 3, **kwargs: Any) -> Any:
        """An obstore store of the lake's bucket (under ``prefix``; other options as in
        ``finpipe.lake.object_store``), which retries a failed request a few times."""
        bucket = self.settings.load().s3_bucket
        return lake.object_store(
            self.access(), bucket=bucket, prefix=prefix, max_retries=max_retries, **kwargs
        )

    def client(self) -> Any:
        """A boto3 S3 client: the ``S3Resource``'s own, given the keys."""
        access = self.access()
        keyed = self.s3.model_copy(
            update={
                "aws_access_key_id": access.access_key,
                "aws_secret_access_key": access.secret_key,
            }
        )
        return keyed.get_client()

    # --- the tables --------------------------------------------------------------------

    def trades_table(self) -> lake.LakeTable:
        return lake.trades_table(self.settings.load(), self.access())

    def rejects_table(self) -> lake.LakeTable:
        return lake.rejects_table(self.settings.load(), self.access())

    def summary_tables(self) -> list[lake.LakeTable]:
        """The summary tables (``finpipe.summaries.NAMES``), in that order."""
        settings, access = self.settings.load(), self.access()
        return [summaries.summary_table(settings, name, access) for name in summaries.NAMES]

    def tables(self) -> list[lake.LakeTable]:
        """Every table: the lake's two, then the summaries."""
        return [self.trades_table(), self.rejects_table(), *self.summary_tables()]

    def dataset(self, days: Iterable[dt.date] | None = None) -> ds.Dataset:
        """The lake's rows of ``days`` (all when None) in its newest snapshot."""
        return lake.snapshot_dataset(self.trades_table().open(), contracts.LAKE_TABLE, days)

    def rejects_dataset(self) -> ds.Dataset:
        """Every reject the Spark query kept (the newest snapshot of the rejects table)."""
        return lake.snapshot_dataset(self.rejects_table().open(), contracts.REJECTS_TABLE)

    # --- DuckDB ------------------------------------------------------------------------

    def connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        con.execute(f"SET threads = {int(self.duckdb_threads)}")
        con.execute("SET memory_limit = ?", [self.duckdb_memory_limit])
        con.execute("SET TimeZone = 'UTC'")
        return con

    def with_lake(self, days: Iterable[dt.date] | None) -> duckdb.DuckDBPyConnection:
        """A connection whose view ``processed_trades`` holds the given days (all if None)."""
        con = self.connect()
        con.register("processed_trades", self.dataset(days))
        return con
