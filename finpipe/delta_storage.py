"""How finpipe's clients reach the object store: where it is, its keys, delta-rs's options.

``S3Access`` is what every client of the store needs (endpoint, region, the two keys), from
the settings (``S3Access.from_settings``) or from another source: the Dagster code location
builds it from its ``S3Resource`` (``finpipe_dagster.resources.storage``). One function,
``storage_options``, turns it into the ``storage_options`` every Delta table of finpipe is
opened and written with; the obstore stores of ``finpipe.lake`` are built from the same
``S3Access``. delta-rs commits by a conditional PUT of the log entry (``If-None-Match``),
which MinIO and S3 honour, so no locking provider is configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from finpipe.settings import Settings

_SECRET_KEYS = frozenset({"AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"})


@dataclass(frozen=True)
class S3Access:
    """The object store's endpoint and region, and the keys to it (never in a repr)."""

    endpoint_url: str
    region: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Access:
        access, secret = settings.s3_credentials
        return cls(settings.s3_endpoint_url, settings.s3_region, access, secret)

    @property
    def uses_tls(self) -> bool:
        """An ``https`` endpoint: every client turns TLS on, and plain HTTP is refused."""
        return self.endpoint_url.startswith("https")


class StorageOptions(dict[str, str]):
    """delta-rs's storage options: a plain ``dict`` to delta-rs, whose repr hides the keys,
    so logging one (or an exception that shows it) never prints a secret."""

    def __repr__(self) -> str:
        shown = {k: ("***" if k in _SECRET_KEYS else v) for k, v in self.items()}
        return f"StorageOptions({shown!r})"

    __str__ = __repr__


def storage_options(
    source: Settings | S3Access,
    *,
    timeout_seconds: float | None = None,
    max_retries: int | None = None,
) -> StorageOptions:
    """The storage options of the object store the settings (or an ``S3Access``) name:
    path-style requests, plain HTTP allowed only for an ``http://`` endpoint. Interactive
    readers pass a short timeout and few retries, so an unreachable store fails their
    refresh quickly instead of after delta-rs's default minutes of retries."""
    access = source if isinstance(source, S3Access) else S3Access.from_settings(source)
    options = StorageOptions(
        AWS_ENDPOINT_URL=access.endpoint_url,
        AWS_ACCESS_KEY_ID=access.access_key,
        AWS_SECRET_ACCESS_KEY=access.secret_key,
        AWS_REGION=access.region,
        AWS_ALLOW_HTTP="false" if access.uses_tls else "true",
        AWS_VIRTUAL_HOSTED_STYLE_REQUEST="false",
    )
    if timeout_seconds is not None:
        millis = f"{round(timeout_seconds * 1000)}ms"
        options["timeout"] = options["retry_timeout"] = millis
        options["connect_timeout"] = f"{round(min(timeout_seconds, 3) * 1000)}ms"
    if max_retries is not None:
        options["max_retries"] = str(max_retries)
    return options
