"""How finpipe replicates the topics it creates, decided on plain values."""

from __future__ import annotations

import pytest

from finpipe.settings import load_settings
from producer.topics import replication_plan


@pytest.mark.parametrize(
    ("brokers", "replicas", "in_sync"),
    [(1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)],
)
def test_by_default_three_replicas_and_two_in_sync_where_the_brokers_allow(
    brokers: int, replicas: int, in_sync: int
) -> None:
    plan = replication_plan(load_settings(), brokers)
    assert (plan.replication_factor, plan.min_insync_replicas) == (replicas, in_sync)
    assert plan.topic_config == {"min.insync.replicas": str(in_sync)}


def test_fewer_than_three_brokers_say_what_they_give_up() -> None:
    reason = replication_plan(load_settings(), 1).reason
    assert "1 broker(s) up" in reason and "3 brokers give 3 replicas" in reason
    assert "KAFKA_REPLICATION_FACTOR" in reason


def test_settings_win_over_the_defaults() -> None:
    plan = replication_plan(load_settings(KAFKA_REPLICATION_FACTOR=2), 5)
    assert (plan.replication_factor, plan.min_insync_replicas) == (2, 1)
    plan = replication_plan(load_settings(KAFKA_MIN_INSYNC_REPLICAS=3), 5)
    assert (plan.replication_factor, plan.min_insync_replicas) == (3, 3)
    assert "(KAFKA_MIN_INSYNC_REPLICAS)" in plan.reason


def test_minus_one_leaves_both_to_the_cluster_unless_in_sync_is_set() -> None:
    plan = replication_plan(load_settings(KAFKA_REPLICATION_FACTOR=-1), 3)
    assert (plan.replication_factor, plan.topic_config) == (-1, {})
    assert "default.replication.factor" in plan.reason
    plan = replication_plan(
        load_settings(KAFKA_REPLICATION_FACTOR=-1, KAFKA_MIN_INSYNC_REPLICAS=2), 3
    )
    assert plan.topic_config == {"min.insync.replicas": "2"}


def test_blank_means_unset() -> None:
    settings = load_settings(KAFKA_REPLICATION_FACTOR="", KAFKA_MIN_INSYNC_REPLICAS=" ")
    assert settings.kafka_replication_factor is None
    assert settings.kafka_min_insync_replicas is None
