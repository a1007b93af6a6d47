"""Create the topics and the lake bucket on already-running services, then exit.

Used by docker-compose's one-shot `setup` service (and usable against any external
Kafka and S3): retries until both answer, so start-up order does not matter.
"""

from __future__ import annotations

import sys
import time

from finpipe.settings import SettingsError, load_settings
from infra import services
from infra.artifacts import say


def main(attempts: int = 30, pause: float = 2.0) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"finpipe: {exc}", file=sys.stderr)
        return 1
    last_error: Exception | None = None
    for _ in range(attempts):
        try:
            services.ensure_topics(settings)
            services.ensure_bucket(settings)
        except Exception as exc:  # any client error: the service may still be starting
            last_error = exc
            time.sleep(pause)
            continue
        say(
            f"topics {settings.kafka_topic}, {settings.kafka_dlq_topic} and bucket "
            f"{settings.s3_bucket} are ready"
        )
        return 0
    print(f"finpipe: setup failed after {attempts} attempts: {last_error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
