from __future__ import annotations

import pytest

from finpipe.settings import DEFAULT_TICKERS, SettingsError, load_settings, same_lake


def test_defaults_use_the_simulator_on_loopback() -> None:
    settings = load_settings()
    assert settings.uses_simulator
    assert settings.feed_url.startswith("ws://")
    assert settings.finnhub_tickers == DEFAULT_TICKERS
    assert settings.s3_credentials == ("minioadmin", "minioadmin")


def test_tickers_are_split_trimmed_and_deduplicated() -> None:
    settings = load_settings(FINNHUB_TICKERS=" AAPL, BRK.B ,BINANCE:BTCUSDT,AAPL,")
    assert settings.finnhub_tickers == ("AAPL", "BRK.B", "BINANCE:BTCUSDT")


def test_tickers_are_upper_cased_like_finnhub_spells_them() -> None:
    settings = load_settings(
        FINNHUB_TICKERS="binance:1000pepeusdt,Coinbase:BTC-USD,oanda:eur_usd,brk.b,AAPL,aapl"
    )
    assert settings.finnhub_tickers == (
        "BINANCE:1000PEPEUSDT", "COINBASE:BTC-USD", "OANDA:EUR_USD", "BRK.B", "AAPL"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"FINNHUB_TICKERS": " , "}, "at least one symbol"),
        ({"FINNHUB_TICKERS": ",".join(f"S{i}" for i in range(51))}, "Finnhub allows 50"),
        ({"KAFKA_SERVER": "kafka"}, "locally use localhost:9092"),
        ({"S3_ENDPOINT_URL": "minio:9000"}, "is not a URL"),
        ({"FRESHNESS_WARN_SECONDS": 600, "FRESHNESS_FAIL_SECONDS": 60}, "must be smaller"),
        ({"S3_ENDPOINT_URL": "https://s3.example.com"}, "set S3_ACCESS_KEY"),
        ({"S3_ACCESS_KEY": "k"}, "set both"),
        ({"SPARK_TRIGGER_SECONDS": 0}, "greater than 0"),
        ({"SPARK_METRICS_PORT": 4040, "SPARK_UI_PORT": 4040}, "SPARK_METRICS_PORT=4040 is also"),
        ({"CONTROL_METRICS_PORT": 9461, "PRODUCER_METRICS_PORT": 9461}, "a port of its own"),
        ({"PRODUCER_METRICS_PORT": 70000}, "less than or equal to 65535"),
        ({"KAFKA_REPLICATION_FACTOR": 0}, "-1 (the cluster's default) or at least 1"),
        (
            {"KAFKA_REPLICATION_FACTOR": 2, "KAFKA_MIN_INSYNC_REPLICAS": 3},
            "no write could ever be acknowledged",
        ),
        ({"KAFKA_SERVER": "localhost:9092,localhost:9093"}, "space the ports by two"),
        ({"KAFKA_SERVER": "localhost:9092,127.0.0.1:9092"}, "cannot be used"),
        ({"MINIO_DRIVES": 3}, "use 1 (one drive folder) or 4 to 16"),
    ],
)
def test_bad_settings_fail_with_the_fix(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(**overrides)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("SUPERVISOR_SENSOR_INTERVAL_SECONDS", 0, "greater than 0"),
        ("PROCESSED_TRADES_SENSOR_INTERVAL_SECONDS", -30, "greater than 0"),
        ("LAKE_MAINTENANCE_SENSOR_INTERVAL_SECONDS", 0, "greater than 0"),
        ("SUMMARIES_REFRESH_SENSOR_INTERVAL_SECONDS", -1, "greater than 0"),
        ("LATE_DATA_SENSOR_INTERVAL_SECONDS", "a minute", "valid integer"),
        ("ALERTS_SENSOR_INTERVAL_SECONDS", 2.5, "valid integer"),
        ("QUALITY_CHECKS_CRON", "every 10 minutes", "e.g. '*/10 * * * *'"),
        ("QUALITY_CHECKS_CRON", "*/10 * * *", "five fields"),
        ("QUALITY_CHECKS_CRON", "*/10 * * * * *", "five fields"),
        ("QUALITY_CHECKS_CRON", "", "five fields"),
        ("ORPHAN_SWEEP_CRON", "weekly", "five fields"),
        ("DASHBOARD_LIVE_PUSH_SECONDS", 0.01, "0 (no push) or at least 0.05 s"),
        ("DASHBOARD_LIVE_PUSH_SECONDS", -1, "greater than or equal to 0"),
    ],
)
def test_bad_cadences_name_the_variable(variable: str, value: object, fragment: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(**{variable: value})
    assert f"  {variable}: " in str(err.value) and fragment in str(err.value)


def test_cadences_accept_a_few_seconds_and_any_cron_shape() -> None:
    settings = load_settings(
        SUPERVISOR_SENSOR_INTERVAL_SECONDS="2",
        ALERTS_SENSOR_INTERVAL_SECONDS=1,
        QUALITY_CHECKS_CRON="0 9-17 * * MON-FRI",
    )
    assert settings.supervisor_sensor_interval_seconds == 2
    assert settings.alerts_sensor_interval_seconds == 1
    assert settings.quality_checks_cron == "0 9-17 * * MON-FRI"
    assert load_settings(QUALITY_CHECKS_CRON="@hourly").quality_checks_cron == "@hourly"
    assert load_settings(ORPHAN_SWEEP_CRON="@weekly").orphan_sweep_cron == "@weekly"
    assert load_settings(DASHBOARD_LIVE_PUSH_SECONDS="0").dashboard_live_push_seconds == 0
    assert load_settings(DASHBOARD_LIVE_PUSH_SECONDS=0.05).dashboard_live_push_seconds == 0.05


def test_default_minio_keys_are_refused_outside_loopback() -> None:
    with pytest.raises(SettingsError, match="refused outside local mode"):
        load_settings(
            S3_ENDPOINT_URL="https://s3.example.com",
            S3_ACCESS_KEY="minioadmin",
            S3_SECRET_KEY="minioadmin",
        )


@pytest.mark.parametrize(
    ("access", "secret"),
    [
        ("minioadmin", "minioadmin"),
        ("finpipe", "finpipe-local-secret"),  # docker-compose.yml's former defaults
        ("own-key", "finpipe-local-secret"),
        ("minioadmin", "own-secret"),
    ],
)
@pytest.mark.parametrize("endpoint", ["http://minio:9000", "https://s3.example.com"])
def test_example_keys_are_refused_for_any_non_loopback_endpoint(
    access: str, secret: str, endpoint: str
) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(S3_ENDPOINT_URL=endpoint, S3_ACCESS_KEY=access, S3_SECRET_KEY=secret)
    message = str(err.value)
    assert "S3_ACCESS_KEY / S3_SECRET_KEY" in message and "S3_ENDPOINT_URL" in message
    assert "own-secret" not in message and "own-key" not in message  # keys never echoed


def test_example_keys_are_fine_on_loopback_and_own_keys_anywhere() -> None:
    local = load_settings(
        S3_ENDPOINT_URL="http://127.0.0.1:9000", S3_ACCESS_KEY="finpipe",
        S3_SECRET_KEY="finpipe-local-secret",
    )  # fmt: skip
    assert local.s3_is_local
    remote = load_settings(
        S3_ENDPOINT_URL="http://minio:9000", S3_ACCESS_KEY="k1", S3_SECRET_KEY="s3cret-own"
    )
    assert remote.s3_credentials == ("k1", "s3cret-own")


def test_secrets_never_appear_in_reprs_or_errors() -> None:
    token = "tok-secret-123456"
    settings = load_settings(FINNHUB_API_TOKEN=token, ALERT_WEBHOOK_URL="http://h/x-secret")
    assert not settings.uses_simulator
    assert token not in repr(settings) and token not in str(settings.model_dump())
    assert token not in settings.feed_url
    assert "x-secret" not in repr(settings)
    with pytest.raises(SettingsError) as err:
        load_settings(FINNHUB_API_TOKEN=token, KAFKA_SERVER="nope")
    assert token not in str(err.value)


def test_blank_token_means_unset() -> None:
    assert load_settings(FINNHUB_API_TOKEN="  ").uses_simulator


def test_env_file_is_read_and_environment_wins(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    env_file = tmp_path / ".env"
    env_file.write_text("FINNHUB_TICKERS=TSLA,BINANCE:ETHUSDT\nKAFKA_TOPIC=from-file\n")
    monkeypatch.setenv("FINPIPE_ENV_FILE", str(env_file))
    monkeypatch.setenv("KAFKA_TOPIC", "from-env")
    settings = load_settings()
    assert settings.finnhub_tickers == ("TSLA", "BINANCE:ETHUSDT")
    assert settings.kafka_topic == "from-env"


def test_field_names_are_not_read_from_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOME", "/nonexistent-home")
    monkeypatch.delenv("FINPIPE_HOME", raising=False)
    settings = load_settings()
    assert settings.home.parts[-3:] == (".local", "share", "finpipe")
    assert load_settings(home="/x", kafka_topic="t").kafka_topic == "t"


def test_the_readme_settings_table_lists_every_setting() -> None:
    import re
    from pathlib import Path

    from finpipe.settings import Settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {
        name for row in rows for name in re.findall(r"`([A-Z0-9_]+)`", row.split(" | ")[0])
    }
    aliases = {field.alias for field in Settings.model_fields.values() if field.alias}
    assert aliases - documented == set(), "settings missing from README's table"
    assert documented - aliases <= {"FINPIPE_ENV_FILE"}, "README documents unknown settings"


def test_state_stored_under_the_former_s3a_address_still_names_the_lake() -> None:
    settings = load_settings(S3_BUCKET="warehouse", LAKE_PREFIX="processed_trades")
    assert settings.lake_uri == "s3://warehouse/processed_trades"
    assert same_lake("s3a://warehouse/processed_trades", settings.lake_uri)
    assert same_lake(settings.lake_uri, settings.lake_uri)
    assert not same_lake("s3://warehouse/other", settings.lake_uri)
    assert not same_lake("s3a://elsewhere/processed_trades", settings.lake_uri)
    assert not same_lake(None, settings.lake_uri)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("COMPACTION_GRACE_SECONDS", "deletedFileRetentionDuration"),
        ("ROLLING_COMPACTION_SENSOR_INTERVAL_SECONDS", "LAKE_MAINTENANCE_SENSOR_INTERVAL_SECONDS"),
    ],
)
def test_a_removed_setting_is_refused_with_what_replaced_it(
    monkeypatch: pytest.MonkeyPatch, name: str, words: str
) -> None:
    monkeypatch.setenv(name, "60")
    with pytest.raises(SettingsError, match=words) as refused:
        load_settings()
    assert name in str(refused.value)


def test_metrics_endpoints_default_to_loopback_and_zero_turns_them_off() -> None:
    settings = load_settings()
    assert settings.metrics_host == "127.0.0.1" and not settings.prometheus_enabled
    off = load_settings(PRODUCER_METRICS_PORT=0, SPARK_METRICS_PORT=0, CONTROL_METRICS_PORT=0)
    assert (off.producer_metrics_port, off.spark_metrics_port, off.control_metrics_port) == (
        0,
        0,
        0,
    )
