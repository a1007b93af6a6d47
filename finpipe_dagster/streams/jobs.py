"""The long-running jobs ``producer_stream`` and ``spark_stream``.

Each runs its stream's entry module under the Pipes bridge: the process's logs and
heartbeats stream into the run, Terminate in the UI stops it with SIGTERM, and the run
fails unless the process exits 0 *and* sent its final report.
"""

from dagster import Failure, JobDefinition, OpExecutionContext, job, multiprocess_executor, op

from finpipe import exit_codes, health
from finpipe.health import PRODUCER, SPARK, STREAMS
from finpipe.settings import SettingsError
from finpipe_dagster.instance import STREAM_TAG
from finpipe_dagster.resources.finpipe_settings import FinpipeSettings, environment_overrides
from finpipe_dagster.streams import processes
from finpipe_dagster.streams.resources import LAST_ERROR_CHARS, PipesStreamClient, stream_command


def stream_job(stream: str) -> JobDefinition:
    description = {
        PRODUCER: "Finnhub (or simulator) WebSocket -> Kafka topic stock-ticks.",
        SPARK: "Spark Structured Streaming: stock-ticks -> processed_trades on the lake.",
    }[stream]

    @op(name=f"run_{stream}", description=f"Runs `{' '.join(stream_command(stream))}`.")
    def run_stream(
        context: OpExecutionContext, finpipe: FinpipeSettings, pipes_stream: PipesStreamClient
    ) -> None:
        try:
            heartbeat_path = health.health_path(finpipe.load(), stream)
        except SettingsError as exc:
            # The stream would refuse the same settings: a fault no retry fixes.
            context.instance.add_run_tags(
                context.run_id,
                {
                    processes.EXITED_TAG: str(exit_codes.NO_RETRY),
                    processes.LAST_ERROR_TAG: " ".join(str(exc).split())[:LAST_ERROR_CHARS],
                },
            )
            raise Failure(str(exc)) from None
        invocation = pipes_stream.run(
            context=context,
            command=stream_command(stream),
            env=environment_overrides(finpipe),
            extras={"stream": stream},
            heartbeat_path=heartbeat_path,
        )
        final = [m for m in invocation.get_custom_messages() if isinstance(m, dict)][-1]
        context.log.info(f"{stream} stopped cleanly; final report: {final}")

    # The stream's op in a step process of its own, as Dagster runs ops by default: a
    # terminated run interrupts that process, whose Pipes client stops the stream (the
    # drills of termination and supervision hold this path). The other jobs of the code
    # location run their steps in the run's own process (``definitions.py``).
    @job(
        name=f"{stream}_stream",
        description=description,
        tags={STREAM_TAG: stream},
        executor_def=multiprocess_executor,
    )
    def stream_job_def() -> None:
        run_stream()

    return stream_job_def


STREAM_JOBS = {stream: stream_job(stream) for stream in STREAMS}
producer_stream = STREAM_JOBS[PRODUCER]
spark_stream = STREAM_JOBS[SPARK]
