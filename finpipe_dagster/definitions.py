"""The finpipe code location: every domain's definitions, merged, with the shared resources.

Loaded by ``workspace.yaml`` (``dagster dev -w workspace.yaml``, ``make up``). Each domain
folder (``streams``, ``lake``, ``summaries``, ``alerts``) builds its own definitions from
the settings (``build_defs``). Built once when the code location loads: the settings
resource reads the environment and ``.env``, and the same resource gives the partitions
and freshness windows of the assets, the sensors' intervals and the schedules' crons, and
the values the sensors and assets use when they run.
"""

from dagster import Definitions, in_process_executor

from finpipe_dagster.alerts import definitions as alerts
from finpipe_dagster.alerts.channel import AlertChannel
from finpipe_dagster.lake import definitions as lake
from finpipe_dagster.resources import FinpipeSettings, KafkaResource, LakeTables, s3_resource
from finpipe_dagster.streams import definitions as streams
from finpipe_dagster.streams.resources import PipesStreamClient, SupervisionPolicy
from finpipe_dagster.summaries import definitions as summaries


def build_resources(finpipe: FinpipeSettings | None = None) -> dict[str, object]:
    """The resources, all sharing one settings resource (tests pass their own) and one
    ``S3Resource``: the object store's endpoint from the settings, never its keys
    (``resources.storage``)."""
    finpipe = finpipe or FinpipeSettings()
    s3 = s3_resource(finpipe.load())
    return {
        "finpipe": finpipe,
        "kafka": KafkaResource(settings=finpipe),
        "s3": s3,
        "lake_tables": LakeTables(settings=finpipe, s3=s3),
        "alerts": AlertChannel(settings=finpipe),
        "pipes_stream": PipesStreamClient(),
        "supervision": SupervisionPolicy(),
    }


def build_defs(finpipe: FinpipeSettings | None = None) -> Definitions:
    finpipe = finpipe or FinpipeSettings()
    settings = finpipe.load()
    return Definitions.merge(
        streams.build_defs(settings),
        lake.build_defs(settings),
        summaries.build_defs(settings),
        alerts.build_defs(settings),
        # Every job but the streams' runs its steps in the run's own process: a step
        # process of its own would import the code location once more (seconds of CPU for
        # each refresh, check and maintenance run on a two-core machine), and these jobs'
        # steps run one after another anyway. Pools are claimed per op in-process too.
        Definitions(resources=build_resources(finpipe), executor=in_process_executor),
    )


defs = build_defs()
