"""The Spark side of parsing: select the Kafka columns, parse them in Python workers.

The parse itself is ``spark.parse`` (msgspec, the contract's own validator); this module
only shapes Spark's Kafka source rows for it and declares the result's Spark schema,
which is derived from ``spark.parse.PREPARED_SCHEMA`` (itself one definition).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from finpipe.contracts import DEFAULT_FUTURE_TOLERANCE_MS
from spark.parse import PREPARED_SCHEMA, kafka_batch_parser

PREPARED_SPARK_SCHEMA = from_arrow_schema(PREPARED_SCHEMA)


def prepare_trades(
    kafka: DataFrame, future_tolerance_ms: int = DEFAULT_FUTURE_TOLERANCE_MS
) -> DataFrame:
    """Kafka source rows -> one ``PREPARED_SCHEMA`` row per record (rejects included)."""
    return kafka.select(
        F.col("key").cast("binary").alias("key"),
        F.col("value").cast("binary").alias("value"),
        F.col("partition").cast("int").alias("kafka_partition"),
        F.col("offset").cast("long").alias("kafka_offset"),
        F.unix_millis("timestamp").alias("kafka_timestamp"),
        # In a streaming query this is the batch's timestamp from the offset log, the same
        # when the batch is replayed: the validity rule's "now", deterministic.
        F.unix_millis(F.current_timestamp()).alias("batch_ts_ms"),
    ).mapInArrow(kafka_batch_parser(future_tolerance_ms), PREPARED_SPARK_SCHEMA)
