"""Resources: configured from the environment through finpipe's shared settings."""

from finpipe_dagster.resources.alerts import AlertChannel
from finpipe_dagster.resources.kafka import KafkaResource
from finpipe_dagster.resources.lake import DuckDBResource, LakeS3Resource
from finpipe_dagster.resources.settings import FinpipeSettings
from finpipe_dagster.resources.streams import PipesStreamClient, SupervisionPolicy

__all__ = [
    "AlertChannel",
    "DuckDBResource",
    "FinpipeSettings",
    "KafkaResource",
    "LakeS3Resource",
    "PipesStreamClient",
    "SupervisionPolicy",
]
