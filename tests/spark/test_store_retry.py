"""Retrying object-store writes: the backoff, its budget, and what is never retried."""

from __future__ import annotations

import pytest

from spark.store_retry import backoff_delays, is_transient, with_retries


def test_backoff_doubles_is_capped_and_stays_within_the_budget() -> None:
    delays = list(backoff_delays(60, first=0.5, cap=10))
    assert delays[:6] == [0.5, 1, 2, 4, 8, 10]
    assert sum(delays) == pytest.approx(60)
    assert max(delays) == 10
    assert list(backoff_delays(0)) == []


class Flaky:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "written"


def test_transient_failures_are_retried_until_the_store_answers() -> None:
    waits: list[float] = []
    action = Flaky(4, OSError("When uploading part: AWS Error NETWORK_CONNECTION ... refused"))
    assert with_retries(action, what="k", budget_seconds=300, sleep=waits.append) == "written"
    assert action.calls == 5 and waits == [0.5, 1, 2, 4]


def test_the_error_surfaces_once_the_budget_is_spent() -> None:
    waits: list[float] = []
    action = Flaky(1000, OSError("AWS Error SERVICE_UNAVAILABLE"))
    with pytest.raises(OSError, match="SERVICE_UNAVAILABLE"):
        with_retries(action, what="k", budget_seconds=20, sleep=waits.append)
    assert sum(waits) == pytest.approx(20)


@pytest.mark.parametrize(
    "error",
    [
        OSError("AWS Error ACCESS_DENIED during PutObject operation"),
        OSError("AWS Error NO_SUCH_BUCKET"),
        ValueError("a bug, not the store"),
    ],
)
def test_what_no_wait_fixes_fails_at_once(error: Exception) -> None:
    waits: list[float] = []
    action = Flaky(1, error)
    with pytest.raises(type(error)):
        with_retries(action, what="k", budget_seconds=300, sleep=waits.append)
    assert action.calls == 1 and waits == []
    assert not is_transient(error)
