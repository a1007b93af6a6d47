"""The shared finpipe settings as a Dagster resource."""

from __future__ import annotations

from dagster import ConfigurableResource

from finpipe.settings import Settings, load_settings


class FinpipeSettings(ConfigurableResource):
    """finpipe's settings, read from the environment and ``.env`` when used.

    The fields override single settings without touching the environment (tests point
    a code location at their own topic and prefixes). Secrets are never fields here, so
    they never show in the Dagster UI's resource configuration.
    """

    kafka_topic: str | None = None
    lake_prefix: str | None = None
    summaries_prefix: str | None = None
    freshness_warn_seconds: int | None = None
    freshness_fail_seconds: int | None = None
    finpipe_home: str | None = None

    def load(self) -> Settings:
        overrides: dict[str, object] = {
            "kafka_topic": self.kafka_topic,
            "lake_prefix": self.lake_prefix,
            "summaries_prefix": self.summaries_prefix,
            "freshness_warn_seconds": self.freshness_warn_seconds,
            "freshness_fail_seconds": self.freshness_fail_seconds,
            "home": self.finpipe_home,
        }
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})


ENV_NAMES = {
    "kafka_topic": "KAFKA_TOPIC",
    "lake_prefix": "LAKE_PREFIX",
    "summaries_prefix": "SUMMARIES_PREFIX",
    "freshness_warn_seconds": "FRESHNESS_WARN_SECONDS",
    "freshness_fail_seconds": "FRESHNESS_FAIL_SECONDS",
    "finpipe_home": "FINPIPE_HOME",
}


def environment_overrides(resource: FinpipeSettings) -> dict[str, str]:
    """The resource's overrides as environment variables, for the streams it launches."""
    return {
        env: str(getattr(resource, field))
        for field, env in ENV_NAMES.items()
        if getattr(resource, field) is not None
    }
