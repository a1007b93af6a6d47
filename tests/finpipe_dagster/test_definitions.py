"""The code location loads and holds everything the platform relies on."""

import yaml
from dagster import AssetKey, Definitions

from finpipe.settings import load_settings
from finpipe_dagster.definitions import defs
from finpipe_dagster.instance import STREAM_TAG, ensure_dagster_home


def test_definitions_validate_and_are_complete() -> None:
    Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assets = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert assets == {
        "stock_ticks",
        "processed_trades",
        "ohlcv_1m",
        "daily_symbol_stats",
        "latest_prices",
        "compacted_trades",
    }
    graph = repo.asset_graph
    parents = {
        key: {p.to_user_string() for p in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    by_name = {k.to_user_string(): v for k, v in parents.items()}
    assert by_name["processed_trades"] == {"stock_ticks"}
    assert by_name["ohlcv_1m"] == by_name["latest_prices"] == {"processed_trades"}
    assert graph.get(AssetKey("ohlcv_1m")).partitions_def is not None
    checks = {k.name for k in graph.asset_check_keys}
    assert checks == {
        "schema_matches_contract",
        "no_null_keys",
        "price_positive",
        "volume_not_negative",
        "trade_value_is_price_times_volume",
        "no_duplicate_kafka_records",
        "reconciles_with_kafka",
        "no_new_rejects",
    }
    jobs = {j.name for j in repo.get_all_jobs()}
    assert {"producer_stream", "spark_stream", "summaries_job", "close_day_job"} <= jobs
    assert repo.get_job("producer_stream").tags[STREAM_TAG] == "producer"
    sensors = {s.name: s for s in repo.sensor_defs}
    assert set(sensors) == {
        "producer_supervisor",
        "spark_supervisor",
        "processed_trades_sensor",
        "summaries_refresh_sensor",
        "late_data_summaries_sensor",
        "alerts_sensor",
    }
    assert all(s.default_status.value == "RUNNING" for s in sensors.values())
    assert {s.name for s in repo.schedule_defs} == {
        "close_day_schedule",
        "processed_trades_checks_schedule",
    }


def test_dagster_home_limits_each_stream_to_one_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    home = ensure_dagster_home(load_settings(home=tmp_path))
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    [limit] = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert limit == {"key": STREAM_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    assert config["telemetry"] == {"enabled": False}
