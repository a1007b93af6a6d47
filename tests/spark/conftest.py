"""The Spark job's test deployment: its own topic, lake prefix, checkpoint and home."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from finpipe.settings import Settings, load_settings
from infra import services
from tests.spark.spark_job_harness import SparkJobEnv


@pytest.fixture
def job_env(infrastructure: Settings, tmp_path: Path) -> Iterator[SparkJobEnv]:
    name = f"it-spark-{uuid.uuid4().hex[:8]}"
    # A fresh Settings (not model_copy) so that derived paths follow the new home.
    settings = load_settings(
        KAFKA_TOPIC=name,
        LAKE_PREFIX=f"tests/{name}",
        SPARK_CHECKPOINT_DIR=tmp_path / "checkpoint",
        SPARK_TRIGGER_SECONDS=1.0,
        FINPIPE_HOME=tmp_path / "home",
    )
    services.ensure_topics(infrastructure, [name])
    (tmp_path / "logs").mkdir()
    env = SparkJobEnv(settings, tmp_path / "logs")
    yield env
    for proc in env.processes:
        if proc.poll() is None:
            env.kill(proc)
