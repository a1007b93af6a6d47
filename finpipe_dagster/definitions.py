"""The finpipe code location: every asset, check, job, sensor, schedule and resource.

Loaded by ``workspace.yaml`` (``dagster dev -w workspace.yaml``, ``make up``).
Resources read finpipe's settings from the environment and ``.env``.
"""

from dagster import Definitions

from finpipe_dagster.assets.compaction import compacted_trades
from finpipe_dagster.assets.lake import processed_trades, stock_ticks
from finpipe_dagster.assets.summaries import daily_summaries
from finpipe_dagster.checks.processed_trades import processed_trades_quality
from finpipe_dagster.jobs.streams import producer_stream, spark_stream
from finpipe_dagster.jobs.summaries import close_day_job, quality_checks_job, summaries_job
from finpipe_dagster.resources import (
    AlertChannel,
    DuckDBResource,
    FinpipeSettings,
    KafkaResource,
    LakeS3Resource,
    PipesStreamClient,
    SupervisionPolicy,
)
from finpipe_dagster.schedules.daily import close_day_schedule, quality_checks_schedule
from finpipe_dagster.sensors.alerts import alerts_sensor
from finpipe_dagster.sensors.lake import processed_trades_sensor
from finpipe_dagster.sensors.late_data import late_data_summaries_sensor
from finpipe_dagster.sensors.summaries import summaries_refresh_sensor
from finpipe_dagster.sensors.supervisors import producer_supervisor, spark_supervisor


def build_resources(finpipe: FinpipeSettings | None = None) -> dict[str, object]:
    """The resources, all sharing one settings resource (tests pass their own)."""
    finpipe = finpipe or FinpipeSettings()
    return {
        "finpipe": finpipe,
        "kafka": KafkaResource(settings=finpipe),
        "lake_s3": LakeS3Resource(settings=finpipe),
        "lake_duckdb": DuckDBResource(settings=finpipe),
        "alerts": AlertChannel(settings=finpipe),
        "pipes_stream": PipesStreamClient(),
        "supervision": SupervisionPolicy(),
    }


defs = Definitions(
    assets=[stock_ticks, processed_trades, daily_summaries, compacted_trades],
    asset_checks=[processed_trades_quality],
    jobs=[producer_stream, spark_stream, summaries_job, close_day_job, quality_checks_job],
    sensors=[
        producer_supervisor,
        spark_supervisor,
        processed_trades_sensor,
        summaries_refresh_sensor,
        late_data_summaries_sensor,
        alerts_sensor,
    ],
    schedules=[close_day_schedule, quality_checks_schedule],
    resources=build_resources(),
)
