"""The Spark session's connector jars come from the SPARK_JARS setting, checked early."""

from __future__ import annotations

from pathlib import Path

import pytest

from finpipe.settings import SettingsError, load_settings
from spark.session import connector_jars


def test_jars_are_files_or_folders_of_jars(tmp_path: Path) -> None:
    folder = tmp_path / "libs"
    folder.mkdir()
    for name in ("spark-sql-kafka-0-10_2.13-4.2.0.jar", "hadoop-aws-3.5.0.jar", "notes.txt"):
        (folder / name).write_text("")
    extra = tmp_path / "extra.jar"
    extra.write_text("")
    settings = load_settings(SPARK_JARS=f"{folder}, {extra}")
    assert [j.name for j in connector_jars(settings)] == [
        "hadoop-aws-3.5.0.jar",
        "spark-sql-kafka-0-10_2.13-4.2.0.jar",
        "extra.jar",
    ]


@pytest.mark.parametrize("value", ["", "/nonexistent/libs"])
def test_missing_jars_name_the_setting_and_the_fix(value: str) -> None:
    with pytest.raises(SettingsError, match="SPARK_JARS") as raised:
        connector_jars(load_settings(SPARK_JARS=value))
    assert "finpipe-infra spark-jars" in str(raised.value)
