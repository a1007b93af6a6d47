"""delta-rs's storage options from the settings: every value it needs, no secret shown."""

from __future__ import annotations

import logging

import pytest

from finpipe.delta_storage import storage_options
from finpipe.settings import load_settings


def test_the_options_name_the_endpoint_keys_and_region() -> None:
    settings = load_settings(
        S3_ENDPOINT_URL="http://minio:9000",
        S3_ACCESS_KEY="own-key",
        S3_SECRET_KEY="own-secret",
        S3_REGION="eu-central-1",
    )
    options = storage_options(settings)
    assert options == {
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_ACCESS_KEY_ID": "own-key",
        "AWS_SECRET_ACCESS_KEY": "own-secret",
        "AWS_REGION": "eu-central-1",
        "AWS_ALLOW_HTTP": "true",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
    }
    tls = load_settings(
        S3_ENDPOINT_URL="https://s3.example.com", S3_ACCESS_KEY="k", S3_SECRET_KEY="s-own"
    )
    assert storage_options(tls)["AWS_ALLOW_HTTP"] == "false"


def test_an_interactive_reader_gets_a_short_timeout_and_no_retries() -> None:
    options = storage_options(load_settings(), timeout_seconds=2.5, max_retries=0)
    assert options["timeout"] == options["retry_timeout"] == "2500ms"
    assert options["connect_timeout"] == "2500ms"
    assert options["max_retries"] == "0"
    assert storage_options(load_settings(), timeout_seconds=10)["connect_timeout"] == "3000ms"


def test_the_keys_never_appear_in_a_repr_a_string_or_a_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = load_settings(
        S3_ENDPOINT_URL="http://minio:9000",
        S3_ACCESS_KEY="own-key-123",
        S3_SECRET_KEY="own-secret-456",
    )
    options = storage_options(settings)
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("opening with %s", options)
    for shown in (repr(options), str(options), f"{options}", caplog.text, repr([options])):
        assert "own-secret-456" not in shown and "own-key-123" not in shown, shown
        assert "http://minio:9000" in shown
