"""Resources shared by several domains, configured from the environment through finpipe's settings.

Resources that belong to one domain live in it (``streams.resources``, ``alerts.channel``).
"""

from finpipe_dagster.resources.finpipe_settings import FinpipeSettings
from finpipe_dagster.resources.kafka import KafkaResource
from finpipe_dagster.resources.storage import LakeTables, s3_resource

__all__ = ["FinpipeSettings", "KafkaResource", "LakeTables", "s3_resource"]
