"""One way to the object store: the ``S3Resource``, and the lake resource on it.

The keys reach every client (delta-rs, obstore, boto3) from each place the settings read
them (the environment, the env file, the local MinIO default), and never appear in what
the Dagster UI shows of the code location (its resources' configuration).
"""

from __future__ import annotations

from pathlib import Path

import obstore
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from dagster_aws.s3 import S3Resource

from finpipe.delta_storage import S3Access, storage_options
from finpipe.settings import LOCAL_MINIO_KEY, load_settings
from finpipe_dagster.definitions import build_defs, build_resources
from finpipe_dagster.resources import FinpipeSettings, LakeTables

from .conftest import DAY, SeededLake

ENV_KEYS = ("env-access-7f3c", "env-secret-9a1d")
FILE_KEYS = ("file-access-2b8e", "file-secret-5c0f")


@pytest.fixture(params=["environment", "env file", "local default"])
def keys(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[str, str]:
    """The keys of one source, the other sources empty."""
    monkeypatch.delenv("S3_ACCESS_KEY", raising=False)
    monkeypatch.delenv("S3_SECRET_KEY", raising=False)
    if request.param == "environment":
        monkeypatch.setenv("S3_ACCESS_KEY", ENV_KEYS[0])
        monkeypatch.setenv("S3_SECRET_KEY", ENV_KEYS[1])
        return ENV_KEYS
    if request.param == "env file":
        env_file = tmp_path / "finpipe.env"
        env_file.write_text(f"S3_ACCESS_KEY={FILE_KEYS[0]}\nS3_SECRET_KEY={FILE_KEYS[1]}\n")
        monkeypatch.setenv("FINPIPE_ENV_FILE", str(env_file))
        return FILE_KEYS
    return LOCAL_MINIO_KEY, LOCAL_MINIO_KEY


def lake_tables() -> LakeTables:
    found = build_resources(FinpipeSettings())["lake_tables"]
    assert isinstance(found, LakeTables)
    return found


def test_the_ui_never_shows_the_keys(keys: tuple[str, str]) -> None:
    """What the code location sends the UI (every resource's configured values, and the
    rest of the repository's snapshot) holds no key, whichever source gave them."""
    repo = build_defs().get_repository_def()
    snap = RepositorySnap.from_def(repo)
    shown = serialize_value(snap)
    for key in keys:
        assert key not in shown
    resources = {r.name: r for r in snap.resources}
    assert {"s3", "lake_tables", "finpipe"} <= set(resources)
    for resource in resources.values():
        for value in resource.configured_values.values():
            assert all(key not in str(value) for key in keys), (resource.name, value)
    s3 = {k: str(v) for k, v in resources["s3"].configured_values.items()}
    # where the store is, yes; the key fields stay unset
    assert load_settings().s3_endpoint_url in s3["endpoint_url"]
    assert s3.get("aws_access_key_id") in (None, "null"), s3
    assert s3.get("aws_secret_access_key") in (None, "null"), s3


def test_every_client_gets_the_keys_of_the_settings(keys: tuple[str, str]) -> None:
    tables = lake_tables()
    settings = load_settings()
    access = tables.access()
    assert (access.access_key, access.secret_key) == keys
    assert (access.endpoint_url, access.region) == (settings.s3_endpoint_url, settings.s3_region)
    # delta-rs (and the obstore stores, built from the same S3Access): the one definition
    assert tables.storage_options() == storage_options(settings)
    assert tables.trades_table().storage_options["AWS_ACCESS_KEY_ID"] == keys[0]
    # boto3: the S3Resource's own client, signing with the keys
    client = tables.client()
    assert client.meta.endpoint_url == settings.s3_endpoint_url
    url = client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
    assert url.startswith(f"{settings.s3_endpoint_url}/b/k?") and f"={keys[0]}&" in url
    # nothing of it in a repr
    for shown in (repr(access), repr(tables.storage_options()), repr(tables.trades_table())):
        assert keys[1] not in shown


def test_the_s3_resource_is_configured_once_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", "https://objects.example.com")
    monkeypatch.setenv("S3_REGION", "eu-central-1")
    monkeypatch.setenv("S3_ACCESS_KEY", "own-access")
    monkeypatch.setenv("S3_SECRET_KEY", "own-secret")
    resources = build_resources(FinpipeSettings())
    s3, tables = resources["s3"], resources["lake_tables"]
    assert isinstance(s3, S3Resource) and isinstance(tables, LakeTables)
    assert (s3.endpoint_url, s3.region_name, s3.use_ssl) == (
        "https://objects.example.com",
        "eu-central-1",
        True,
    )
    assert s3.aws_access_key_id is None and s3.aws_secret_access_key is None
    assert tables.s3 is s3
    assert tables.storage_options()["AWS_ALLOW_HTTP"] == "false"


def test_keys_an_operator_sets_on_the_s3_resource_win() -> None:
    s3 = S3Resource(
        endpoint_url="http://127.0.0.1:9000",
        region_name="us-east-1",
        use_ssl=False,
        aws_access_key_id="operator-access",
        aws_secret_access_key="operator-secret",
    )
    tables = LakeTables(settings=FinpipeSettings(), s3=s3)
    assert tables.access() == S3Access(
        "http://127.0.0.1:9000", "us-east-1", "operator-access", "operator-secret"
    )


def test_the_code_location_has_no_s3_client_of_its_own() -> None:
    """boto3 and botocore are kept out by an import contract (pyproject.toml); pyarrow's
    S3 filesystem and the core's own clients, which a contract cannot name, by this."""
    package = Path(__file__).resolve().parents[2] / "finpipe_dagster"
    found = [
        f"{path.relative_to(package)}: {name}"
        for path in sorted(package.rglob("*.py"))
        for name in ("pyarrow.fs", "S3FileSystem", "s3_filesystem", "s3_client")
        if name in path.read_text()
    ]
    assert found == []


def test_on_minio_every_client_of_the_resource_reaches_the_same_objects(
    seeded: SeededLake,
) -> None:
    """delta-rs, obstore, DuckDB and the S3Resource's boto3 client, all from one resource."""
    tables = seeded.lake_tables
    rows = seeded.trades(DAY, 20, seed=7)
    version = seeded.write(rows)
    table = tables.trades_table()
    assert table.uri == seeded.table.uri
    snapshot = table.open()
    assert snapshot is not None and snapshot.version() == version
    con = tables.with_lake([DAY])
    assert con.execute("SELECT count(*) FROM processed_trades").fetchone() == (len(rows),)
    settings = seeded.settings
    key = f"{settings.summaries_prefix}/resource-check/object.bin"
    obstore.put(tables.store(), key, b"one way in")
    client = tables.client()
    assert client.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read() == b"one way in"
    listed = client.list_objects_v2(Bucket=settings.s3_bucket, Prefix=table.key_prefix + "/")
    assert any(o["Key"].endswith(".parquet") for o in listed.get("Contents", []))
