"""Parse and enrich the Kafka records: Spark column expressions only, no I/O.

The output keeps every input record: valid ones carry the lake's columns, the others a
``reject_reason`` and their raw key/value, so nothing is dropped on the way to the sink.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from spark.schema import TRADE_RECORD, RecordContract

MS_PER_DAY = 86_400_000
PARSED = "record"


def reject_reason(contract: RecordContract = TRADE_RECORD) -> Column:
    """Null for a valid record, else why it is not a valid ``TradeRecord``."""
    problems = [
        F.when(F.col(f"{PARSED}.{name}").isNull(), F.lit(f"{name} missing or invalid"))
        for name in contract.required
    ]
    for name, values in contract.allowed_values.items():
        allowed = ", ".join(values)
        problems.append(
            F.when(
                ~F.col(f"{PARSED}.{name}").isin(*values),
                F.concat(
                    F.lit(f"{name} '"), F.col(f"{PARSED}.{name}"), F.lit(f"' not one of {allowed}")
                ),
            )
        )
    joined = F.concat_ws("; ", *problems)
    # Spark's PERMISSIVE parser turns malformed JSON into a struct of nulls.
    return (
        F.when(F.col("value").isNull(), F.lit("empty Kafka value"))
        .when(_all_fields_null(contract), F.lit("malformed JSON or not a TradeRecord object"))
        .when(joined != "", joined)
    )


def _all_fields_null(contract: RecordContract) -> Column:
    condition = F.col(PARSED).isNull()
    everything_null = F.lit(True)
    for field in contract.schema.fields:
        everything_null = everything_null & F.col(f"{PARSED}.{field.name}").isNull()
    return condition | everything_null


def prepare_trades(kafka: DataFrame, contract: RecordContract = TRADE_RECORD) -> DataFrame:
    """Kafka source rows -> the columns ``spark.lake_files.write_batch_rows`` consumes.

    ``trade_date`` is the UTC day of ``trade_ts`` computed from epoch milliseconds, so it
    never depends on a session time zone; it is null for rejects, which keeps them out of
    every lake partition.
    """
    raw = kafka.select(
        F.col("key").cast("string").alias("key"),
        F.col("value").cast("string").alias("value"),
        F.col("partition").cast("int").alias("kafka_partition"),
        F.col("offset").cast("long").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
    )
    parsed = raw.withColumn(PARSED, F.from_json("value", contract.schema, {"mode": "PERMISSIVE"}))
    checked = parsed.withColumn("reject_reason", reject_reason(contract))
    valid = F.col("reject_reason").isNull()
    record = F.col(PARSED)

    epoch_day = F.floor(record["trade_ts_ms"] / MS_PER_DAY).cast("int")

    def when_valid(column: Column) -> Column:
        return F.when(valid, column)

    return checked.select(
        valid.alias("valid"),
        "reject_reason",
        when_valid(record["symbol"]).alias("symbol"),
        record["price"].alias("price"),
        record["volume"].alias("volume"),
        (record["price"] * record["volume"]).alias("trade_value"),
        record["trade_ts_ms"].alias("trade_ts_ms"),
        record["ingest_ts_ms"].alias("ingest_ts_ms"),
        record["conditions"].alias("conditions"),
        "kafka_partition",
        "kafka_offset",
        when_valid(F.date_from_unix_date(epoch_day)).alias("trade_date"),
        F.unix_millis("kafka_timestamp").alias("kafka_timestamp"),
        # The raw record is only needed for rejects; valid rows do not carry it.
        F.when(~valid, F.col("key")).alias("key"),
        F.when(~valid, F.col("value")).alias("value"),
    )
