"""The code location loads, and its graph is the reviewed snapshot.

``graph_snapshot`` describes what the Dagster UI shows of the code location: every asset
(dependencies, partitions, checks, kinds, group, freshness, automation), every job,
sensor and schedule. A change to any of them fails this test until the snapshot in
``__snapshots__/`` is regenerated (``pytest tests/finpipe_dagster/test_definitions.py
--snapshot-update``) and the diff reviewed with the change.
"""

from typing import Any

import pytest
import yaml
from dagster import Definitions, instance_for_test
from dagster._core.execution.api import create_execution_plan
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from finpipe.settings import SettingsError, load_settings
from finpipe_dagster.definitions import defs
from finpipe_dagster.instance import (
    MAINTENANCE_POOL,
    MAINTENANCE_TAG,
    STREAM_TAG,
    ensure_dagster_home,
)


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


def _partitions(partitions_def: Any) -> dict[str, Any] | None:
    if partitions_def is None:
        return None
    return {
        "type": type(partitions_def).__name__,
        "start": partitions_def.start.isoformat(),
        "timezone": partitions_def.timezone,
        "end_offset": partitions_def.end_offset,
    }


def _freshness(policy: Any) -> dict[str, float] | None:
    if policy is None:
        return None
    return {
        "fail_window_seconds": policy.fail_window.to_timedelta().total_seconds(),
        "warn_window_seconds": (
            policy.warn_window.to_timedelta().total_seconds() if policy.warn_window else None
        ),
    }


def graph_snapshot(definitions: Definitions) -> dict[str, Any]:
    repo = definitions.get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "execution_type": node.execution_type.value,
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "partitions": _partitions(node.partitions_def),
            "backfill_policy": str(node.backfill_policy) if node.backfill_policy else None,
            "freshness": _freshness(node.freshness_policy),
            "automation_condition": (
                node.automation_condition.get_label() if node.automation_condition else None
            ),
            "checks": sorted(c.name for c in node.check_keys),
        }
    return {
        "assets": assets,
        "jobs": {
            job.name: {"tags": dict(sorted(job.tags.items())), "executor": job.executor_def.name}
            for job in sorted(repo.get_all_jobs(), key=lambda j: j.name)
            if not job.name.startswith("__")
        },
        "sensors": {
            s.name: {
                "jobs": sorted(t.job_name for t in s.targets),
                "minimum_interval_seconds": s.minimum_interval_seconds,
                "default_status": s.default_status.value,
            }
            for s in sorted(repo.sensor_defs, key=lambda s: s.name)
        },
        "schedules": {
            s.name: {
                "job": s.job_name,
                "cron": s.cron_schedule,
                "timezone": s.execution_timezone,
                "default_status": s.default_status.value,
            }
            for s in sorted(repo.schedule_defs, key=lambda s: s.name)
        },
    }


def test_definitions_validate() -> None:
    Definitions.validate_loadable(defs)


def test_the_graph_is_the_reviewed_snapshot(snapshot_json: SnapshotAssertion) -> None:
    assert graph_snapshot(defs) == snapshot_json


def test_dagster_home_limits_each_stream_to_one_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    home = ensure_dagster_home(load_settings(home=tmp_path))
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    stream, maintenance = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert stream == {"key": STREAM_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    # Lake maintenance never runs twice at once: one run in the queue, one op in the pool.
    assert maintenance == {"key": MAINTENANCE_TAG, "limit": 1}
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    assert repo_job_tags("lake_maintenance_job")[MAINTENANCE_TAG] == "lake"
    with instance_for_test(overrides={"concurrency": config["concurrency"]}) as instance:
        # the instance this file configures gives the pool one slot: a second op waits
        slots = instance.event_log_storage
        assert slots.initialize_concurrency_limit_to_default(MAINTENANCE_POOL)
        assert slots.claim_concurrency_slot(MAINTENANCE_POOL, "run-1", "maintain_lake").is_claimed
        second = slots.claim_concurrency_slot(MAINTENANCE_POOL, "run-2", "compacted_trades")
        assert not second.is_claimed
    assert config["telemetry"] == {"enabled": False}
    # Runs retry only when they ask for it (close-day and late-data runs), never a stream.
    assert config["run_retries"] == {"enabled": True, "max_retries": 0}
    assert repo_job_tags("close_day_job")["dagster/max_retries"] == "3"
    assert "dagster/max_retries" not in repo_job_tags("spark_stream")


def repo_job_tags(name: str) -> dict[str, str]:
    return dict(defs.get_repository_def().get_job(name).tags)


def test_close_day_compacts_only_after_the_summaries() -> None:
    """A close-day run never compacts what its summaries step is still reading."""
    plan = create_execution_plan(defs.get_repository_def().get_job("close_day_job"))
    assert plan.get_step_by_key("compacted_trades").get_execution_dependency_keys() == {
        "daily_summaries"
    }


@pytest.mark.parametrize(("warn", "fail"), [(30, 60), (1, 2), (60, 75), (120, 600)])
def test_freshness_windows_under_dagsters_minute_still_load(
    monkeypatch: pytest.MonkeyPatch, warn: int, fail: int
) -> None:
    """A drill's short windows (the alert sensor applies them as set) must not break the
    code location: Dagster's policy gets its minute, the warn window only when it fits."""
    from finpipe_dagster.definitions import build_defs
    from finpipe_dagster.lake.assets import PROCESSED_TRADES

    monkeypatch.setenv("FRESHNESS_WARN_SECONDS", str(warn))
    monkeypatch.setenv("FRESHNESS_FAIL_SECONDS", str(fail))
    built = build_defs()
    graph = built.get_repository_def().asset_graph
    policy = _freshness(graph.get(PROCESSED_TRADES).freshness_policy)
    assert policy is not None and policy["fail_window_seconds"] == max(fail, 60)
    assert policy["warn_window_seconds"] == (warn if 60 <= warn < max(fail, 60) else None)


SHORT_CADENCES = {
    "SUPERVISOR_SENSOR_INTERVAL_SECONDS": "2",
    "PROCESSED_TRADES_SENSOR_INTERVAL_SECONDS": "3",
    "LAKE_MAINTENANCE_SENSOR_INTERVAL_SECONDS": "4",
    "SUMMARIES_REFRESH_SENSOR_INTERVAL_SECONDS": "5",
    "LATE_DATA_SENSOR_INTERVAL_SECONDS": "6",
    "ALERTS_SENSOR_INTERVAL_SECONDS": "7",
    "QUALITY_CHECKS_CRON": "* * * * *",
    "ORPHAN_SWEEP_CRON": "*/2 * * * *",
}


def _without_cadences(graph: dict[str, Any]) -> dict[str, Any]:
    return {
        **graph,
        "sensors": {
            name: {k: v for k, v in found.items() if k != "minimum_interval_seconds"}
            for name, found in graph["sensors"].items()
        },
        "schedules": {
            name: {k: v for k, v in found.items() if k != "cron"}
            for name, found in graph["schedules"].items()
        },
    }


def test_a_drills_short_cadences_reach_every_sensor_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The defaults are the snapshot's; set, each setting moves its sensors or schedule."""
    from finpipe_dagster.definitions import build_defs

    for variable, value in SHORT_CADENCES.items():
        monkeypatch.setenv(variable, value)
    graph = graph_snapshot(build_defs())
    intervals = {name: s["minimum_interval_seconds"] for name, s in graph["sensors"].items()}
    assert intervals == {
        "alerts_sensor": 7,
        "late_data_summaries_sensor": 6,
        "processed_trades_sensor": 3,
        "producer_supervisor": 2,
        "lake_maintenance_sensor": 4,
        "spark_supervisor": 2,
        "summaries_refresh_sensor": 5,
    }
    assert {name: s["cron"] for name, s in graph["schedules"].items()} == {
        "close_day_schedule": "20 0 * * *",  # tied to summaries.schedules.CLOSE_DELAY
        "orphan_sweep_schedule": "*/2 * * * *",
        "processed_trades_checks_schedule": "* * * * *",
    }
    assert _without_cadences(graph) == _without_cadences(graph_snapshot(defs))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SUPERVISOR_SENSOR_INTERVAL_SECONDS", "0"),
        ("ALERTS_SENSOR_INTERVAL_SECONDS", "-30"),
        ("QUALITY_CHECKS_CRON", "every 10 minutes"),
        ("QUALITY_CHECKS_CRON", "61 * * * *"),  # five fields, but no minute 61
        ("QUALITY_CHECKS_CRON", "0 0 30 2 *"),  # February 30th never comes
        ("ORPHAN_SWEEP_CRON", "45 3 * * 8"),  # no eighth day of the week
    ],
)
def test_a_bad_cadence_stops_the_code_location_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    from finpipe_dagster.definitions import build_defs

    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=f"\n  {variable}: "):
        build_defs()
