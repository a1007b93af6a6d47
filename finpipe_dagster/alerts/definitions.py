"""The alerts domain's definitions."""

from dagster import Definitions

from finpipe_dagster.alerts.sensors import alerts_sensor

defs = Definitions(sensors=[alerts_sensor])
