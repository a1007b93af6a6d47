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
    when sending and never logged. The POST timeout is ``ALERT_POST_TIMEOUT_SECONDS``.
    """

    settings: FinpipeSettings

    def log(self, text: str, log: logging.Logger | None = None) -> None:
        (log or logger).warning("ALERT %s", text)

    def post(self, text: str, idempotency_key: str, log: logging.Logger | None = None) -> bool:
        """Post one message; True when the webhook accepted it (or none is configured)."""
        log = log or logger
        settings = self.settings.load()
        if settings.alert_webhook_url is None:
            return True  # the log is the channel
        request = urllib.request.Request(
            settings.alert_webhook_url.get_secret_value(),
            data=json.dumps({"text": text}).encode(),
            headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
            method="POST",
        )
        try:
            with urllib.request.urlopen(
                request, timeout=settings.alert_post_timeout_seconds
            ) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            # The exception text may hold the URL: name only its type and status.
            status = getattr(exc, "code", "no response")
            log.error(
                "alert webhook failed (%s, %s) for %s; it will be retried",
                type(exc).__name__,
                status,
                idempotency_key,
            )
            return False
        log.info("alert %s delivered to the webhook", idempotency_key)
        return True
