"""Dagster's storage on PostgreSQL, switched on by one variable: ``DAGSTER_POSTGRES_URL``.

The integration test runs a real PostgreSQL server (Debian's package, started by the
module fixture), writes dagster.yaml with ``ensure_dagster_home``, records a run and an
asset materialization through ``DagsterInstance.get()``, and reads them back from a
fresh instance and from the database itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, asset, materialize

from finpipe.settings import SettingsError, load_settings
from finpipe_dagster.instance import POSTGRES_URL_VAR, STREAM_TAG, ensure_dagster_home
from infra.stack import _dagster_env
from tests.finpipe_dagster.postgres_server import PostgresServer, start_server


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


# --- the setting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgres://u:hunter2@db:5432/dagster", "must start with postgresql://"),
        ("mysql://u:hunter2@db/dagster", "must start with postgresql://"),
        ("postgresql://u:hunter2@db:5432/", "must name a host and a database"),
        ("postgresql://u:hunter2@db:port/dagster", "invalid port"),
    ],
)
def test_a_wrong_postgres_url_is_refused_without_echoing_it(url: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(DAGSTER_POSTGRES_URL=url)
    message = str(caught.value)
    assert "DAGSTER_POSTGRES_URL" in message and problem in message
    assert "hunter2" not in message


def test_the_postgres_url_is_optional_and_secret() -> None:
    assert load_settings(DAGSTER_POSTGRES_URL=" ").dagster_postgres_url is None
    settings = load_settings(DAGSTER_POSTGRES_URL="postgresql://u:hunter2@db:5432/dagster")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    assert settings.dagster_postgres_url is not None
    # SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql://; the driver is named.
    assert settings.dagster_postgres_url.get_secret_value() == (
        "postgresql+psycopg2://u:hunter2@db:5432/dagster"
    )
    sockets = load_settings(DAGSTER_POSTGRES_URL="postgresql:///dagster?host=/run/postgresql")
    assert sockets.dagster_postgres_url is not None
    assert sockets.dagster_postgres_url.get_secret_value() == (
        "postgresql+psycopg2:///dagster?host=/run/postgresql"
    )


def test_without_the_variable_dagster_keeps_its_sqlite_files(dagster_home: Path) -> None:
    ensure_dagster_home(load_settings())
    assert "storage" not in yaml.safe_load((dagster_home / "dagster.yaml").read_text())
    assert POSTGRES_URL_VAR not in _dagster_env(load_settings())


# --- a real server ----------------------------------------------------------------------


@asset
def ping() -> int:
    return 1


def test_run_and_asset_history_live_in_postgres(
    postgres: PostgresServer, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = f"dagster_{uuid.uuid4().hex[:8]}"
    postgres.create_database(database)
    url = postgres.url(database)
    settings = load_settings(DAGSTER_POSTGRES_URL=url)

    # dagster.yaml names the variable; the URL and its password stay out of the file.
    ensure_dagster_home(settings)
    text = (dagster_home / "dagster.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["storage"] == {"postgres": {"postgres_url": {"env": POSTGRES_URL_VAR}}}
    assert postgres.password not in text and str(postgres.port) not in text
    assert config["concurrency"]["runs"]["tag_concurrency_limits"][0]["key"] == STREAM_TAG
    # What `make up` hands the webserver and the daemon, even when the URL is in .env only:
    # the URL as given, with the driver dagster-postgres ships.
    dagster_url = _dagster_env(settings)[POSTGRES_URL_VAR]
    assert dagster_url == url.replace("postgresql://", "postgresql+psycopg2://", 1)

    monkeypatch.setenv(POSTGRES_URL_VAR, dagster_url)
    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        result = materialize([ping], instance=instance, tags={STREAM_TAG: "test"})
        assert result.success
        run_id = result.run_id

    # History survives: a fresh instance (as after `make down` / `make up`) reads it back.
    with DagsterInstance.get() as fresh:
        run = fresh.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS
        assert run.tags[STREAM_TAG] == "test"
        event = fresh.get_latest_materialization_event(AssetKey("ping"))
        assert event is not None and event.run_id == run_id

    # ... because it is in PostgreSQL, not in SQLite files under DAGSTER_HOME.
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchall() == [("SUCCESS",)]
        cur.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND asset_key = %s",
            (run_id, AssetKey("ping").to_string()),
        )
        (events,) = cur.fetchone()
        assert events >= 1
    conn.close()
    assert not list(dagster_home.rglob("*.db")), list(dagster_home.rglob("*.db"))
