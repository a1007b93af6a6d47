"""PipesStreamClient with real child processes that report through finpipe.health.

The child runs under the Pipes bridge, as the producer and the Spark query do.
"""

import textwrap
from pathlib import Path

import pytest
from dagster import Failure, OpExecutionContext, job, op

from finpipe_dagster.streams.pipes_bridge import bridge_command
from finpipe_dagster.streams.resources import PipesStreamClient

CHILD = textwrap.dedent(
    """
    import sys
    from finpipe.health import StreamReporter
    from finpipe.settings import load_settings

    mode = sys.argv[1]
    with StreamReporter(load_settings(), "teststream") as reporter:
        reporter.heartbeat({"sent": 1})
        if mode == "clean":
            reporter.final({"sent": 1, "status": "stopped"})
    sys.exit(3 if mode == "crash" else 0)
    """
)


def run_child(mode: str, home: Path) -> None:
    script = home / "child.py"
    script.write_text(CHILD)

    @op
    def stream_op(context: OpExecutionContext, pipes_stream: PipesStreamClient) -> None:
        invocation = pipes_stream.run(
            context=context,
            command=bridge_command(str(script), mode),
            env={"FINPIPE_HOME": str(home)},
        )
        # Only the final report is kept by the run worker, not every heartbeat.
        assert [m["final"] for m in invocation.get_custom_messages()] == [True]

    @job(resource_defs={"pipes_stream": PipesStreamClient()})
    def stream_job() -> None:
        stream_op()

    stream_job.execute_in_process()


def test_clean_exit_with_final_report_succeeds(tmp_path: Path) -> None:
    run_child("clean", tmp_path)
    assert (tmp_path / "state" / "teststream_health.json").exists()


def test_exit_zero_without_final_report_fails(tmp_path: Path) -> None:
    with pytest.raises(Failure, match="no final report"):
        run_child("silent", tmp_path)


def test_nonzero_exit_fails(tmp_path: Path) -> None:
    with pytest.raises(Failure, match="exited with code 3"):
        run_child("crash", tmp_path)
