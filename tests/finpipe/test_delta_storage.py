"""delta-rs's storage options from the settings: every value it needs, no secret shown."""

from __future__ import annotations

import logging

import pytest

from finpipe import lake
from finpipe.delta_storage import S3Access, storage_options
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


def test_the_options_of_an_s3_access_are_those_of_its_settings() -> None:
    """One definition: the Dagster code location's ``S3Access`` (its ``S3Resource``'s
    endpoint and the settings' keys) gives what the settings give."""
    settings = load_settings(
        S3_ENDPOINT_URL="http://minio:9000", S3_ACCESS_KEY="k-1", S3_SECRET_KEY="s-1"
    )
    access = S3Access("http://minio:9000", settings.s3_region, "k-1", "s-1")
    assert access == S3Access.from_settings(settings)
    assert storage_options(access, timeout_seconds=5) == storage_options(
        settings, timeout_seconds=5
    )
    assert "s-1" not in repr(access) and "k-1" not in repr(access)
    assert storage_options(S3Access("https://s3.example.com", "r", "k", "s"))["AWS_ALLOW_HTTP"] == (
        "false"
    )


def test_an_object_store_of_an_s3_access_names_its_bucket() -> None:
    access = S3Access("http://127.0.0.1:9000", "us-east-1", "k", "s")
    with pytest.raises(ValueError, match="bucket"):
        lake.object_store(access)
    assert lake.object_store(access, bucket="warehouse", prefix="p") is not None
