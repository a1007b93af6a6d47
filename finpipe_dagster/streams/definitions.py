"""The streams domain's definitions."""

from dagster import Definitions

from finpipe_dagster.streams.jobs import producer_stream, spark_stream
from finpipe_dagster.streams.sensors import producer_supervisor, spark_supervisor

defs = Definitions(
    jobs=[producer_stream, spark_stream],
    sensors=[producer_supervisor, spark_supervisor],
)
