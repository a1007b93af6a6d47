"""Retrying object-store writes through a transient failure, inside the batch.

An object store that restarts, fails over or is briefly unreachable must not fail the
streaming query: a failed query means a process restart, a JVM start and, with the
supervisor's backoff, minutes without data. A write that fails is therefore retried with
capped exponential backoff until a time budget (``S3_WRITE_RETRY_SECONDS``) is spent;
only then does the error reach Spark and fail the query. Retrying is safe because each
object's name and content are fixed by the batch (see ``spark.lake_files``) and a PUT
that failed made nothing visible. The driver's commit of the batch to the Delta tables is
retried the same way (``spark.sink``).

Errors that no wait fixes (wrong keys, missing bucket) fail at once.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 10.0
PERMANENT_ERROR_MARKERS = (
    "ACCESS_DENIED",
    "AccessDenied",
    "NO_SUCH_BUCKET",
    "NoSuchBucket",
    "INVALID_ACCESS_KEY_ID",
    "InvalidAccessKeyId",
    "SIGNATURE_DOES_NOT_MATCH",
    "SignatureDoesNotMatch",
)
"""Words in pyarrow's (AWS SDK) error text of failures that retrying cannot fix."""


def is_transient(exc: BaseException) -> bool:
    """pyarrow reports every S3 failure as OSError, delta-rs as OSError or a DeltaError
    (a commit that lost to others after its own retries, too: the sink's commit checks
    the table's transaction first, so trying again never adds a batch twice); the text
    tells which kind it is. A missing table or a schema or protocol mismatch is not."""
    from deltalake.exceptions import (
        DeltaError,
        DeltaProtocolError,
        SchemaMismatchError,
        TableNotFoundError,
    )

    if isinstance(exc, TableNotFoundError | SchemaMismatchError | DeltaProtocolError):
        return False
    if not isinstance(exc, OSError | DeltaError):
        return False
    text = str(exc)
    return not any(marker in text for marker in PERMANENT_ERROR_MARKERS)


def backoff_delays(
    budget_seconds: float, first: float = FIRST_DELAY_SECONDS, cap: float = MAX_DELAY_SECONDS
) -> Iterator[float]:
    """Waits before each retry: doubling from ``first`` up to ``cap``, summing to the
    budget at most (the last wait is cut so the budget is never exceeded)."""
    spent, delay = 0.0, first
    while spent < budget_seconds:
        step = min(delay, cap, budget_seconds - spent)
        yield step
        spent += step
        delay *= 2


def _report(event: str, **fields: object) -> None:
    # Runs in a Python worker, where the driver's logging is not configured; stderr
    # reaches the job's log (and the Dagster run) all the same, as one JSON line.
    print(json.dumps({"event": event, "logger": "spark.store", **fields}), file=sys.stderr)


def with_retries(
    action: Callable[[], T],
    *,
    what: str,
    budget_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``action()``, retried through transient failures for up to ``budget_seconds``."""
    delays = backoff_delays(budget_seconds)
    attempt = 1
    while True:
        try:
            result = action()
        except Exception as exc:
            delay = next(delays, None) if is_transient(exc) else None
            if delay is None:
                raise
            _report(
                "object_store_write_retry",
                object=what,
                attempt=attempt,
                retry_in_seconds=round(delay, 2),
                error=str(exc).splitlines()[0][:300],
            )
            sleep(delay)
            attempt += 1
            continue
        if attempt > 1:
            _report("object_store_write_recovered", object=what, attempts=attempt)
        return result
