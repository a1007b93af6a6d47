"""The alert channel: a Slack-compatible webhook, and always the log."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from dagster import ConfigurableResource

from finpipe_dagster.resources.finpipe_settings import FinpipeSettings

logger = logging.getLogger("finpipe.alerts")


class AlertChannel(ConfigurableResource):
    """Posts ``{"text": ...}`` to ``ALERT_WEBHOOK_URL`` when set.

    The URL is a secret (a Slack webhook grants posting): it is read from the settings
    when sending and never logged.
    """

    settings: FinpipeSettings
    timeout_seconds: float = 10.0

    def send(self, text: str, log: logging.Logger | None = None) -> bool:
        """Log the alert and post it; returns whether the webhook accepted it."""
        log = log or logger
        log.warning("ALERT %s", text)
        url = self.settings.load().alert_webhook_url
        if url is None:
            return False
        request = urllib.request.Request(
            url.get_secret_value(),
            data=json.dumps({"text": text}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            # The exception text may hold the URL: name only its type and status.
            status = getattr(exc, "code", "no response")
            log.error("alert webhook failed (%s, %s); see this log", type(exc).__name__, status)
            return False
        return True
