"""The producer's connection helpers: token handling, backoff, settings-driven source."""

from __future__ import annotations

import random

from finpipe.settings import Settings
from producer.app import source_of
from producer.feed import Backoff, feed_endpoint, redact


def test_without_a_token_the_simulator_is_the_feed(settings: Settings) -> None:
    url, safe = feed_endpoint(settings)
    assert url == safe == f"ws://127.0.0.1:{settings.simulator_port}"
    assert source_of(settings) == "simulator"
    replaying = settings.model_copy(update={"replay_file": "x.jsonl"})
    assert source_of(replaying) == "replay"


def test_the_token_goes_in_the_url_and_nowhere_else() -> None:
    s = Settings(FINNHUB_API_TOKEN="s3cr3t/tok+en", FINPIPE_ENV_FILE="")
    url, safe = feed_endpoint(s)
    assert url.startswith("wss://ws.finnhub.io?token=") and "s3cr3t" in url
    assert safe == "wss://ws.finnhub.io?token=***"
    assert source_of(s) == "finnhub"
    leaked = f"failed to open {url} (token s3cr3t/tok+en)"
    assert "s3cr3t" not in redact(leaked, s)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    backoff = Backoff(base=1.0, cap=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jitter: no two clients retry in lockstep
    backoff.reset()
    assert backoff.next_delay() <= 1.0
