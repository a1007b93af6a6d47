from __future__ import annotations

from pathlib import Path

from infra import artifacts


def test_artifact_ids_drop_versions() -> None:
    assert artifacts._artifact_id_of("kafka-clients-3.9.2.jar") == "kafka-clients"
    assert artifacts._artifact_id_of("spark-sql-kafka-0-10_2.13-4.2.0.jar") == (
        "spark-sql-kafka-0-10_2.13"
    )
    assert artifacts._artifact_id_of("netty-buffer-4.2.13.Final.jar") == "netty-buffer"


def test_manifest_detects_incomplete_and_changed_files(tmp_path: Path) -> None:
    artifact = artifacts.Artifact("demo", "1.0", tmp_path / "demo" / "1.0")
    assert not artifact.is_complete()
    (artifact.root / "libs").mkdir(parents=True)
    jar = artifact.root / "libs" / "a-1.jar"
    jar.write_bytes(b"abc")
    assert not artifact.is_complete()  # no manifest: a download was interrupted
    artifact.write_manifest([jar])
    assert artifact.is_complete()
    jar.write_bytes(b"abcd")
    assert not artifact.is_complete()


def test_spark_connector_versions_follow_the_installed_pyspark() -> None:
    import pyspark

    spark, scala = artifacts.spark_versions()
    assert spark == pyspark.__version__
    assert scala == "2.13"
    assert any(artifacts.pyspark_jars_dir().glob(f"spark-core_{scala}-{spark}.jar"))
    assert artifacts.spark_connectors_artifact(Path("cache")).version == f"spark-{spark}_{scala}"
