from __future__ import annotations

from pathlib import Path

from infra import artifacts


def test_artifact_ids_drop_versions() -> None:
    assert artifacts._artifact_id_of("kafka-clients-3.9.2.jar") == "kafka-clients"
    assert artifacts._artifact_id_of("spark-sql-kafka-0-10_2.13-4.2.0.jar") == (
        "spark-sql-kafka-0-10_2.13"
    )
    assert artifacts._artifact_id_of("wildfly-openssl-2.2.5.Final.jar") == "wildfly-openssl"


def test_manifest_detects_incomplete_and_changed_files(tmp_path: Path) -> None:
    artifact = artifacts.Artifact("demo", "1.0", tmp_path / "demo" / "1.0")
    assert not artifact.is_complete()
    (artifact.root / "libs").mkdir(parents=True)
    jar = artifact.root / "libs" / "a-1.jar"
    jar.write_bytes(b"abc")
    assert not artifact.is_complete()  # no manifest: a download was interrupted
    artifact.write_manifest([jar])
    assert artifact.is_complete()
    assert artifact.verify_checksums() == []
    jar.write_bytes(b"abd")
    assert artifact.verify_checksums() == ["libs/a-1.jar"]
    jar.write_bytes(b"abcd")
    assert not artifact.is_complete()


def test_spark_connector_versions_follow_the_installed_pyspark() -> None:
    import pyspark

    spark, scala, hadoop = artifacts.spark_versions()
    assert spark == pyspark.__version__
    assert scala == "2.13"
    assert (artifacts.pyspark_jars_dir() / f"hadoop-client-api-{hadoop}.jar").is_file()
