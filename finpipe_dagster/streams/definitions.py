"""The streams domain's definitions."""

from dagster import Definitions

from finpipe.settings import Settings
from finpipe_dagster.streams.jobs import producer_stream, spark_stream
from finpipe_dagster.streams.sensors import build_supervisor_sensors


def build_defs(settings: Settings) -> Definitions:
    return Definitions(
        jobs=[producer_stream, spark_stream],
        sensors=list(build_supervisor_sensors(settings).values()),
    )
