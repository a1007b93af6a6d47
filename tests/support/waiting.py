"""Waiting for a condition: the one polling loop of the suite."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], timeout: float, every: float = 0.5) -> T:
    """Call ``probe`` until it returns something truthy and return that; fail after
    ``timeout`` seconds with a message naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
