"""Alerts: the webhook channel and the sensor that opens and closes incidents."""
