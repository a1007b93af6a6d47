"""The streams' data as external assets: the Kafka topic and the lake table.

Neither is materialized by Dagster: ``stock_ticks`` is written by the producer and
``processed_trades`` by the Spark query. The lake sensor (``lake/sensors.py``) records
their updates, which drive freshness, the summaries and the alerts.
"""

import datetime as dt

from dagster import AssetKey, AssetSpec, FreshnessPolicy

from finpipe import contracts
from finpipe.settings import Settings

STOCK_TICKS = AssetKey("stock_ticks")
PROCESSED_TRADES = AssetKey("processed_trades")
COMPACTED_TRADES = AssetKey("compacted_trades")
"""The closed days' compaction of ``processed_trades`` (``lake/maintenance.py``)."""


def stock_ticks_spec(settings: Settings) -> AssetSpec:
    return AssetSpec(
        key=STOCK_TICKS,
        description=(
            f"Kafka topic `{settings.kafka_topic}` (key = symbol): one JSON trade record per "
            "trade, written by the producer. Observations show end offsets and the Spark lag."
        ),
        group_name="streams",
        kinds={"kafka"},
        metadata={"topic": settings.kafka_topic, "dead_letter_topic": settings.kafka_dlq_topic},
    )


def processed_trades_spec(settings: Settings) -> AssetSpec:
    """The lake table, with the freshness windows of the settings the sensors also use."""
    return AssetSpec(
        key=PROCESSED_TRADES,
        deps=[STOCK_TICKS],
        description=(
            f"Delta Lake table `s3://{settings.s3_bucket}/{settings.lake_prefix}` partitioned "
            "by trade_date and symbol, written by the Spark query (one commit per micro-batch, "
            f"application transaction `{contracts.SPARK_APP_ID}`). Any Delta reader reads it; "
            "finpipe reads it through `finpipe.lake`. Its materializations carry the table "
            "version as data version."
        ),
        group_name="streams",
        kinds={"s3", "delta"},
        freshness_policy=freshness_policy(settings),
        metadata={"columns": ", ".join(contracts.LAKE_SCHEMA.names)},
    )


DAGSTER_MIN_FRESHNESS_WINDOW = dt.timedelta(minutes=1)
"""Dagster refuses a freshness window under a minute, and the whole code location with it."""


def freshness_policy(settings: Settings) -> FreshnessPolicy:
    """The settings' windows; shorter than Dagster's minute (drills), the fail window is
    raised to it and the warn window left out. The alert sensor and the dashboard apply
    FRESHNESS_WARN_SECONDS / FRESHNESS_FAIL_SECONDS exactly as set."""
    fail = max(dt.timedelta(seconds=settings.freshness_fail_seconds), DAGSTER_MIN_FRESHNESS_WINDOW)
    warn = dt.timedelta(seconds=settings.freshness_warn_seconds)
    usable_warn = DAGSTER_MIN_FRESHNESS_WINDOW <= warn < fail
    return FreshnessPolicy.time_window(fail_window=fail, warn_window=warn if usable_warn else None)
