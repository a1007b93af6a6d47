"""The alerts domain's definitions."""

from dagster import Definitions

from finpipe.settings import Settings
from finpipe_dagster.alerts.sensors import build_alerts_sensor


def build_defs(settings: Settings) -> Definitions:
    return Definitions(sensors=[build_alerts_sensor(settings)])
