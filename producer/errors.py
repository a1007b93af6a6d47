"""Errors of the producer that no retry can fix."""

from __future__ import annotations


class FatalError(RuntimeError):
    """A problem that retrying cannot fix; the message says which setting to change."""
