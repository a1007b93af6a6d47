"""Build the SparkSession that reads Kafka (the executors write the lake with pyarrow).

Connector jars are local files named by the setting ``SPARK_JARS`` (the launcher sets it
to the cache that provisioning fetched from Maven Central) and handed to Spark as
``spark.jars``: ``spark.jars.packages`` would go through Ivy and ignore Maven's mirror
settings.

In local mode the driver and its web UI stay on loopback, and the UI's kill links are
off: whoever can reach it could otherwise stop the stream's jobs.

No option may carry a secret: PySpark hands every option to spark-submit as
``--conf key=value`` on its command line, which any user of the host can read (``ps``).
The S3 keys reach the executors inside the tasks they run (``spark.sink``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from finpipe.settings import Settings, SettingsError

LOOPBACK = "127.0.0.1"


def connector_jars(settings: Settings) -> list[Path]:
    """The jar files ``SPARK_JARS`` names (a folder stands for the jars in it)."""
    jars: list[Path] = []
    for entry in settings.spark_jars:
        path = entry.expanduser()
        jars += sorted(path.glob("*.jar")) if path.is_dir() else [path] if path.is_file() else []
    if not any(j.name.startswith("spark-sql-kafka") for j in jars):
        named = ",".join(str(p) for p in settings.spark_jars) or "(unset)"
        raise SettingsError(
            f"SPARK_JARS={named} holds no spark-sql-kafka jar: set SPARK_JARS to the "
            "provisioned connector jars (`finpipe-infra spark-jars` prints their folder; "
            "`make up` sets it for Dagster and the streams it launches)"
        )
    return jars


def build_spark_session(settings: Settings, app_name: str = "finpipe") -> SparkSession:
    jars = connector_jars(settings)
    # The driver and executors must run the same Python as this process.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.jars", ",".join(str(j) for j in jars))
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        # The writer tasks of a batch: each (day, symbol) is written by one of them.
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.streaming.stopGracefullyOnShutdown", "true")
        .config("spark.ui.port", str(settings.spark_ui_port))
        .config("spark.ui.killEnabled", "false")
    )
    if settings.spark_master.startswith("local"):
        # Local mode: keep the driver and its UI on loopback. The UI ignores
        # spark.driver.bindAddress and binds to $SPARK_LOCAL_IP (else every interface),
        # which the JVM this call launches reads from our environment.
        os.environ["SPARK_LOCAL_IP"] = settings.spark_ui_host
        builder = builder.config("spark.driver.bindAddress", LOOPBACK).config(
            "spark.driver.host", LOOPBACK
        )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
