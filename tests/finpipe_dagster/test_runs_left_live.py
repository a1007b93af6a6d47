"""What a crash leaves in Dagster's run storage, cleaned up at start-up: a started run whose
worker is gone is marked failed and its pool slots freed; a run whose worker lives, a
queued run and a finished one are left as they are."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from dagster import DagsterRunStatus
from dagster._core.events import EngineEventData
from dagster._core.test_utils import create_run_for_test, instance_for_test

from finpipe.settings import load_settings
from finpipe_dagster.instance import (
    MAINTENANCE_POOL,
    ensure_dagster_home,
    fail_runs_left_live,
    run_worker_pids,
)

DEAD_PID = 999_999_999  # above any pid_max: never a live process


def test_a_started_run_whose_worker_is_gone_is_failed_and_frees_its_pool_slot(
    tmp_path: Path,
) -> None:
    config = yaml.safe_load(
        (ensure_dagster_home(load_settings(home=tmp_path)) / "dagster.yaml").read_text()
    )
    overrides = {"concurrency": config["concurrency"], "run_monitoring": config["run_monitoring"]}
    with instance_for_test(overrides=overrides) as instance:
        runs = {
            status: create_run_for_test(
                instance, job_name=f"job_{status.value.lower()}", status=status
            )
            for status in (
                DagsterRunStatus.STARTED,
                DagsterRunStatus.STARTING,
                DagsterRunStatus.CANCELING,
                DagsterRunStatus.NOT_STARTED,
                DagsterRunStatus.SUCCESS,
            )
        }
        dead = runs[DagsterRunStatus.STARTED]
        instance.report_engine_event(
            f"Started process for run (pid: {DEAD_PID}).",
            dead,
            EngineEventData.in_process(DEAD_PID),
        )
        live = create_run_for_test(instance, job_name="job_live", status=DagsterRunStatus.STARTED)
        instance.report_engine_event(
            "Started process for run.", live, EngineEventData.in_process(os.getpid())
        )
        slots = instance.event_log_storage
        assert slots.initialize_concurrency_limit_to_default(MAINTENANCE_POOL)
        assert slots.claim_concurrency_slot(
            MAINTENANCE_POOL, dead.run_id, "maintain_lake"
        ).is_claimed
        assert run_worker_pids(instance, dead.run_id) == [DEAD_PID]

        failed = fail_runs_left_live(instance, alive=lambda pid: pid == os.getpid())

        # The dead worker's run, and the two that never got a worker to report: failed.
        assert set(failed) == {
            runs[s].run_id
            for s in (
                DagsterRunStatus.STARTED,
                DagsterRunStatus.STARTING,
                DagsterRunStatus.CANCELING,
            )
        }
        for run_id in failed:
            assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE  # type: ignore[union-attr]
        failure = instance.all_logs(dead.run_id)[-1].message
        assert f"pid {DEAD_PID}" in failure and "marked failed at start-up" in failure
        assert instance.get_run_by_id(live.run_id).status == DagsterRunStatus.STARTED  # type: ignore[union-attr]
        assert (
            instance.get_run_by_id(runs[DagsterRunStatus.NOT_STARTED].run_id).status
            == DagsterRunStatus.NOT_STARTED
        )  # type: ignore[union-attr]
        # The pool's one slot is free again: the next compaction can claim it.
        assert slots.claim_concurrency_slot(
            MAINTENANCE_POOL, "next-run", "maintain_lake"
        ).is_claimed
        # Nothing left to do the second time.
        assert fail_runs_left_live(instance, alive=lambda pid: pid == os.getpid()) == []


def test_the_daemon_frees_slots_a_killed_step_kept(tmp_path: Path) -> None:
    config = yaml.safe_load(
        (ensure_dagster_home(load_settings(home=tmp_path)) / "dagster.yaml").read_text()
    )
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
