"""Supervisor sensors over a real (temporary) Dagster instance."""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import (
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunRequest,
    SkipReason,
    build_sensor_context,
    instance_for_test,
)

from finpipe import health
from finpipe.settings import load_settings
from finpipe_dagster.instance import STREAM_TAG
from finpipe_dagster.resources import FinpipeSettings
from finpipe_dagster.streams import processes
from finpipe_dagster.streams.jobs import producer_stream
from finpipe_dagster.streams.resources import SupervisionPolicy
from finpipe_dagster.streams.sensors import build_supervisor_sensors

producer_supervisor = build_supervisor_sensors(load_settings())[health.PRODUCER]


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


def tick(instance: DagsterInstance, home: Path, **policy: float) -> tuple[object, dict]:
    context = build_sensor_context(
        instance=instance,
        resources={
            "finpipe": FinpipeSettings(finpipe_home=str(home)),
            "supervision": SupervisionPolicy(**policy),
        },
    )
    result = producer_supervisor(context)
    return result, json.loads(context.cursor or "{}")


def started_run(instance: DagsterInstance) -> str:
    run = instance.create_run_for_job(producer_stream, tags={STREAM_TAG: "producer"})
    instance.report_dagster_event(
        DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name), run_id=run.run_id
    )
    return run.run_id


def beat(home: Path) -> None:
    reporter = health.StreamReporter(load_settings(home=home), "producer")
    with reporter:
        reporter.heartbeat({"sent": 1})


def status(instance: DagsterInstance, run_id: str) -> DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def test_no_run_launches(instance: DagsterInstance, tmp_path: Path) -> None:
    result, cursor = tick(instance, tmp_path)
    assert isinstance(result, RunRequest)
    assert result.tags[STREAM_TAG] == "producer"
    assert cursor["action"] == "launch"


def test_live_run_is_left_alone(instance: DagsterInstance, tmp_path: Path) -> None:
    run_id = started_run(instance)
    beat(tmp_path)
    result, cursor = tick(instance, tmp_path)
    assert isinstance(result, SkipReason)
    assert cursor["action"] == "skip"
    assert run_id in cursor["reason"]
    assert status(instance, run_id) == DagsterRunStatus.STARTED


def test_failed_run_is_relaunched_after_backoff(instance: DagsterInstance, tmp_path: Path) -> None:
    run_id = started_run(instance)
    run = instance.get_run_by_id(run_id)
    assert run is not None
    instance.report_run_failed(run, message="crashed")

    result, cursor = tick(instance, tmp_path, base_backoff_seconds=3600, max_backoff_seconds=7200)
    assert isinstance(result, SkipReason)
    assert cursor["action"] == "wait"
    assert cursor["failures_in_row"] == 1
    assert cursor["next_attempt_ts"] > time.time() + 3000

    result, cursor = tick(instance, tmp_path, base_backoff_seconds=0.0)
    assert isinstance(result, RunRequest)
    assert cursor["action"] == "launch"


def test_stale_heartbeat_terminates_and_replaces(instance: DagsterInstance, tmp_path: Path) -> None:
    run_id = started_run(instance)
    beat(tmp_path)
    time.sleep(0.05)
    result, cursor = tick(instance, tmp_path, stale_heartbeat_seconds=0.01)
    assert cursor["action"] == "replace"
    assert cursor["terminate"] == [run_id]
    # no worker answers for this run (as after a crash): it is marked failed and replaced
    assert status(instance, run_id) == DagsterRunStatus.FAILURE
    assert cursor["terminated"][run_id] == "marked failed (worker unreachable, process gone)"
    assert isinstance(result, RunRequest)
    run = instance.get_run_by_id(run_id)
    assert run is not None
    assert run.tags["finpipe/terminated_by"] == "supervisor"


def test_a_run_is_healthy_only_once_its_stream_reports_progress(
    instance: DagsterInstance, tmp_path: Path
) -> None:
    """From the heartbeat file and the run tags the supervisor reads: a run whose stream
    is alive but shows no progress (Spark's query without Kafka) keeps the incident open."""
    never = started_run(instance)
    instance.add_run_tags(never, {processes.PROGRESSED_UNTIL_TAG: processes.NEVER_PROGRESSED})
    run = instance.get_run_by_id(never)
    assert run is not None
    instance.report_run_failed(run, message="Kafka: TimeoutException")
    started_run(instance)
    reporter = health.StreamReporter(load_settings(home=tmp_path), "producer")
    policy = {"stable_run_seconds": 0.01, "alert_after_failures": 1}
    with reporter:
        reporter.heartbeat({health.PROGRESS_KEY: None})
        time.sleep(0.05)
        _, cursor = tick(instance, tmp_path, **policy)
        assert (cursor["healthy"], cursor["incident"]) == (False, "keeps_failing"), cursor
        assert "no progress reported yet" in cursor["reason"]
        reporter.heartbeat({health.PROGRESS_KEY: time.time()})
        _, cursor = tick(instance, tmp_path, **policy)
        assert (cursor["healthy"], cursor["incident"]) == (True, None), cursor


def failed_run_with_process(instance: DagsterInstance, identity: str) -> str:
    """A run marked failed although nobody saw its process exit (a lost worker)."""
    run_id = started_run(instance)
    instance.add_run_tags(run_id, {processes.PROCESS_TAG: identity})
    run = instance.get_run_by_id(run_id)
    assert run is not None
    instance.report_run_failed(run, message="worker lost")
    return run_id


def test_a_lingering_process_is_stopped_before_any_relaunch(
    instance: DagsterInstance, tmp_path: Path
) -> None:
    # a real process that ignores SIGTERM: only SIGKILL, after the grace, ends it
    child = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
         "signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        failed_run_with_process(instance, processes.identity(child.pid))
        policy = {"base_backoff_seconds": 0.0, "kill_grace_seconds": 3.0}
        result, cursor = tick(instance, tmp_path, **policy)
        assert isinstance(result, SkipReason) and "waiting for old process" in result.skip_message
        assert cursor["action"] == "stop_old"
        assert child.poll() is None  # SIGTERM was ignored; the grace has not passed
        time.sleep(1.1)
        context_cursor = json.dumps(cursor)
        context = build_sensor_context(
            instance=instance,
            cursor=context_cursor,
            resources={
                "finpipe": FinpipeSettings(finpipe_home=str(tmp_path)),
                "supervision": SupervisionPolicy(**policy),
            },
        )
        result = producer_supervisor(context)
        assert isinstance(result, SkipReason)
        assert "SIGKILL sent; confirmed gone" in context.cursor  # type: ignore[operator]
        assert child.wait(5) == -9
        result, cursor = tick(instance, tmp_path, **policy)
        assert isinstance(result, RunRequest) and cursor["action"] == "launch"
    finally:
        child.kill()
        child.wait()


def test_a_process_on_another_host_blocks_the_relaunch(
    instance: DagsterInstance, tmp_path: Path
) -> None:
    failed_run_with_process(instance, "elsewhere.example:4242:777")
    result, cursor = tick(instance, tmp_path, base_backoff_seconds=0.0)
    assert isinstance(result, SkipReason)
    assert cursor["action"] == "wait_old"
    assert "pid 4242 on host elsewhere.example" in cursor["reason"]
