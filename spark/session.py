"""Build the SparkSession that reads Kafka and writes the lake through s3a.

Connector jars come from the local cache (fetched from Maven Central by
``infra.artifacts``) and are handed to Spark as local files: ``spark.jars.packages``
would go through Ivy and ignore Maven's mirror settings.
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from finpipe.settings import Settings
from infra import artifacts


def s3a_options(settings: Settings) -> dict[str, str]:
    access, secret = settings.s3_credentials
    return {
        "spark.hadoop.fs.s3a.endpoint": settings.s3_endpoint_url,
        "spark.hadoop.fs.s3a.endpoint.region": settings.s3_region,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(settings.s3_uses_tls).lower(),
        "spark.hadoop.fs.s3a.aws.credentials.provider": (
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
        ),
        "spark.hadoop.fs.s3a.access.key": access,
        "spark.hadoop.fs.s3a.secret.key": secret,
    }


def build_spark_session(settings: Settings, app_name: str = "finpipe") -> SparkSession:
    jars = artifacts.spark_connector_jars(settings.cache_dir)
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
    )
    if settings.spark_master.startswith("local"):
        # Local mode: keep the driver (and its UI on :4040) on loopback.
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config(
            "spark.driver.host", "127.0.0.1"
        )
    for key, value in s3a_options(settings).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
