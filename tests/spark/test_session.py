"""The Spark session's connector jars come from the SPARK_JARS setting, checked early, and
nothing secret reaches spark-submit's command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark import SparkConf

from finpipe.settings import SettingsError, load_settings
from spark.session import build_spark_session, connector_jars

SECRETS = {
    "S3_ACCESS_KEY": "s3-access-Kq81",
    "S3_SECRET_KEY": "s3-secret-Zu47",
    "FINNHUB_API_TOKEN": "finnhub-token-Wx52",
    "SIMULATOR_TOKEN": "simulator-token-Pm09",
    "ALERT_WEBHOOK_URL": "https://hooks.example.com/services/webhook-secret-Lr36",
    "DAGSTER_POSTGRES_URL": "postgresql://dagster:pg-password-Tn75@db.example.com:5432/dagster",
}
SECRET_WORDS = ("Kq81", "Zu47", "Wx52", "Pm09", "Lr36", "Tn75")


def test_jars_are_files_or_folders_of_jars(tmp_path: Path) -> None:
    folder = tmp_path / "libs"
    folder.mkdir()
    for name in ("spark-sql-kafka-0-10_2.13-4.2.0.jar", "kafka-clients-3.9.2.jar", "notes.txt"):
        (folder / name).write_text("")
    extra = tmp_path / "extra.jar"
    extra.write_text("")
    settings = load_settings(SPARK_JARS=f"{folder}, {extra}")
    assert [j.name for j in connector_jars(settings)] == [
        "kafka-clients-3.9.2.jar",
        "spark-sql-kafka-0-10_2.13-4.2.0.jar",
        "extra.jar",
    ]


@pytest.mark.parametrize("value", ["", "/nonexistent/libs"])
def test_missing_jars_name_the_setting_and_the_fix(value: str) -> None:
    with pytest.raises(SettingsError, match="SPARK_JARS") as raised:
        connector_jars(load_settings(SPARK_JARS=value))
    assert "finpipe-infra spark-jars" in str(raised.value)


class _Launched(Exception):
    """Stands in for the JVM: the session's configuration is all this test needs."""


@pytest.mark.parametrize("master", ["local[2]", "spark://spark-master:7077"])
def test_no_secret_is_on_spark_submits_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, master: str
) -> None:
    """PySpark starts the JVM with every option as ``--conf key=value`` in spark-submit's
    argv, which any user of the host can read: the options must hold no secret."""
    jar = tmp_path / "spark-sql-kafka-0-10_2.13-4.2.0.jar"
    jar.write_text("")
    settings = load_settings(SPARK_JARS=str(jar), SPARK_MASTER=master, **SECRETS)
    submitted: list[dict[str, str]] = []

    def launch_gateway(conf: SparkConf | None = None, popen_kwargs: object = None) -> None:
        assert conf is not None
        submitted.append(dict(conf.getAll()))
        raise _Launched

    monkeypatch.setattr("pyspark.core.context.launch_gateway", launch_gateway)
    # The session exports these for the JVM; restore them afterwards.
    for name in ("SPARK_LOCAL_IP", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
        monkeypatch.setenv(name, "")
    with pytest.raises(_Launched):
        build_spark_session(settings)

    (conf,) = submitted
    assert conf["spark.master"] == master and conf["spark.jars"] == str(jar)
    assert settings.s3_credentials == (SECRETS["S3_ACCESS_KEY"], SECRETS["S3_SECRET_KEY"])
    leaked = {key for key, value in conf.items() for word in SECRET_WORDS if word in value}
    assert not leaked, f"secrets in spark-submit's --conf options: {sorted(leaked)}"
