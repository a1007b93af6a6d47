"""How delta-rs reaches the object store: its storage options, from the settings.

One place turns the endpoint, keys and region into the ``storage_options`` every Delta
table of finpipe is opened and written with (the summaries now, the lake next). delta-rs
commits by a conditional PUT of the log entry (``If-None-Match``), which MinIO and S3
honour, so no locking provider is configured.
"""

from __future__ import annotations

from finpipe.settings import Settings

_SECRET_KEYS = frozenset({"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"})


class StorageOptions(dict[str, str]):
    """delta-rs's storage options: a plain ``dict`` to delta-rs, whose repr hides the keys,
    so logging one (or an exception that shows it) never prints a secret."""

    def __repr__(self) -> str:
        shown = {k: ("***" if k in _SECRET_KEYS else v) for k, v in self.items()}
        return f"StorageOptions({shown!r})"

    __str__ = __repr__


def storage_options(
    settings: Settings,
    *,
    timeout_seconds: float | None = None,
    max_retries: int | None = None,
) -> StorageOptions:
    """The storage options of the settings' object store (path-style requests, plain HTTP
    allowed only for an ``http://`` endpoint). Interactive readers pass a short timeout and
    few retries, so an unreachable store fails their refresh quickly instead of after
    delta-rs's default minutes of retries."""
    access, secret = settings.s3_credentials
    options = StorageOptions(
        AWS_ENDPOINT_URL=settings.s3_endpoint_url,
        AWS_ACCESS_KEY_ID=access,
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_REGION=settings.s3_region,
        AWS_ALLOW_HTTP="false" if settings.s3_uses_tls else "true",
        AWS_VIRTUAL_HOSTED_STYLE_REQUEST="false",
    )
    if timeout_seconds is not None:
        millis = f"{round(timeout_seconds * 1000)}ms"
        options["timeout"] = options["retry_timeout"] = millis
        options["connect_timeout"] = f"{round(min(timeout_seconds, 3) * 1000)}ms"
    if max_retries is not None:
        options["max_retries"] = str(max_retries)
    return options
