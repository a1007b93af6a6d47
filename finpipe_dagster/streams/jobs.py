"""The long-running jobs ``producer_stream`` and ``spark_stream``.

Each runs its stream's console script under Dagster Pipes: the process's logs and
heartbeats stream into the run, Terminate in the UI stops it with SIGTERM, and the run
fails unless the process exits 0 *and* sent its final report.
"""

from dagster import JobDefinition, OpExecutionContext, job, op

from finpipe.health import PRODUCER, SPARK, STREAMS
from finpipe_dagster.instance import STREAM_TAG
from finpipe_dagster.resources.finpipe_settings import FinpipeSettings, environment_overrides
from finpipe_dagster.streams.resources import PipesStreamClient, stream_command


def stream_job(stream: str) -> JobDefinition:
    description = {
        PRODUCER: "Finnhub (or simulator) WebSocket -> Kafka topic stock-ticks.",
        SPARK: "Spark Structured Streaming: stock-ticks -> processed_trades on the lake.",
    }[stream]

    @op(name=f"run_{stream}", description=f"Runs `{' '.join(stream_command(stream))}`.")
    def run_stream(
        context: OpExecutionContext, finpipe: FinpipeSettings, pipes_stream: PipesStreamClient
    ) -> None:
        invocation = pipes_stream.run(
            context=context,
            command=stream_command(stream),
            env=environment_overrides(finpipe),
            extras={"stream": stream},
        )
        final = [m for m in invocation.get_custom_messages() if isinstance(m, dict)][-1]
        context.log.info(f"{stream} stopped cleanly; final report: {final}")

    @job(name=f"{stream}_stream", description=description, tags={STREAM_TAG: stream})
    def stream_job_def() -> None:
        run_stream()

    return stream_job_def


STREAM_JOBS = {stream: stream_job(stream) for stream in STREAMS}
producer_stream = STREAM_JOBS[PRODUCER]
spark_stream = STREAM_JOBS[SPARK]
