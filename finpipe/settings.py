"""finpipe's settings: one model, read from the environment and `.env`.

Names of the original project are kept (``FINNHUB_API_TOKEN``, ``FINNHUB_TICKERS``,
``KAFKA_SERVER``, ``KAFKA_TOPIC``). Wrong values fail fast with a message that says
what to fix; secrets are ``SecretStr`` and never printed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from finpipe import contracts

DEFAULT_TICKERS = (
    "BINANCE:BTCUSDT",
    "BINANCE:ETHUSDT",
    "BINANCE:SOLUSDT",
    "AAPL",
    "MSFT",
    "AMZN",
    "NVDA",
)
LOCAL_MINIO_KEY = "minioadmin"
# Keys anyone can read in this repository (MinIO's default and docker-compose.yml's former
# defaults): accepted on loopback, refused for any other endpoint.
EXAMPLE_S3_KEYS = frozenset({LOCAL_MINIO_KEY, "finpipe", "finpipe-local-secret"})
FINNHUB_WS_URL = "wss://ws.finnhub.io"
MAX_FINNHUB_SYMBOLS = 50
MIN_LIVE_PUSH_SECONDS = 0.05
CRON_FIELD = re.compile(r"[0-9A-Za-z*,/?#-]+")
"""What one field of a cron expression is made of (numbers, names, ``*``, lists, ranges,
steps)."""


def same_lake(stored: object, lake_uri: str) -> bool:
    """Whether a lake address stored with some state (``Settings.lake_uri`` then) names the
    lake at ``lake_uri``. State stored while the address was spelled for Hadoop
    (``s3a://``) still counts, so an upgrade rebuilds no day's summaries or checks."""
    return isinstance(stored, str) and stored.replace("s3a://", "s3://", 1) == lake_uri


def is_loopback_host(host: str | None) -> bool:
    """``localhost`` or a loopback address (the test of every "local mode" default)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SettingsError(ValueError):
    """A setting is wrong; the message names the variable and the fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # --- feed -------------------------------------------------------------------------
    finnhub_api_token: SecretStr | None = Field(default=None, alias="FINNHUB_API_TOKEN")
    finnhub_tickers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_TICKERS, alias="FINNHUB_TICKERS"
    )
    finnhub_ws_url: str = Field(default=FINNHUB_WS_URL, alias="FINNHUB_WS_URL")
    simulator_host: str = Field(default="127.0.0.1", alias="SIMULATOR_HOST")
    simulator_port: int = Field(default=8765, ge=1, le=65535, alias="SIMULATOR_PORT")
    replay_file: Path | None = Field(default=None, alias="FINPIPE_REPLAY_FILE")
    replay_speed: float = Field(default=1.0, ge=0, alias="FINPIPE_REPLAY_SPEED")
    silent_socket_seconds: float = Field(default=150.0, gt=0, alias="PRODUCER_SILENT_SECONDS")
    # The embedded demo runs any hour of the day: US stocks trade outside their session
    # unless this is false (then the simulator sends stock trades 9:30-16:00 New York only).
    simulator_ignore_market_hours: bool = Field(default=True, alias="SIMULATOR_IGNORE_MARKET_HOURS")
    # When set, the simulator refuses handshakes without this token (HTTP 401), like Finnhub.
    simulator_token: SecretStr | None = Field(default=None, alias="SIMULATOR_TOKEN")

    # --- Kafka ------------------------------------------------------------------------
    kafka_server: str = Field(default="localhost:9092", alias="KAFKA_SERVER")
    kafka_topic: str = Field(default=contracts.TRADES_TOPIC, alias="KAFKA_TOPIC")
    kafka_dlq_topic: str = Field(default=contracts.DLQ_TOPIC, alias="KAFKA_DLQ_TOPIC")
    kafka_partitions: int = Field(default=3, ge=1, alias="KAFKA_PARTITIONS")
    # Unset: 3 replicas on a cluster of three or more brokers, else one per broker
    # (producer/topics.py decides and logs why); -1: the cluster's default.replication.factor.
    kafka_replication_factor: int | None = Field(
        default=None, ge=-1, alias="KAFKA_REPLICATION_FACTOR"
    )
    # Unset: 2 where a topic has 3 or more replicas, else 1. With acks=all, a write is
    # acknowledged once this many replicas hold it: 2 of 3 loses nothing when one broker dies.
    kafka_min_insync_replicas: int | None = Field(
        default=None, ge=1, alias="KAFKA_MIN_INSYNC_REPLICAS"
    )
    kafka_delivery_timeout_seconds: float = Field(
        default=300.0, ge=1, le=2_000_000, alias="KAFKA_DELIVERY_TIMEOUT_SECONDS"
    )

    # --- the producer's durable receive log --------------------------------------------
    producer_log_dir: Path | None = Field(default=None, alias="PRODUCER_LOG_DIR")
    # 24 h of a 50-symbol feed at 20 trades/s per symbol (~80 bytes per trade logged) is
    # ~7 GB; the default leaves room for twice that.
    producer_log_max_mb: int = Field(default=16_000, ge=1, alias="PRODUCER_LOG_MAX_MB")
    producer_log_segment_mb: int = Field(default=64, ge=1, alias="PRODUCER_LOG_SEGMENT_MB")
    producer_log_flush_ms: int = Field(default=200, ge=1, le=10_000, alias="PRODUCER_LOG_FLUSH_MS")
    producer_log_retention_hours: float = Field(
        default=24.0, ge=0, alias="PRODUCER_LOG_RETENTION_HOURS"
    )
    producer_backlog_alert_seconds: float = Field(
        default=300.0, gt=0, alias="PRODUCER_BACKLOG_ALERT_SECONDS"
    )

    # --- S3 / MinIO -------------------------------------------------------------------
    s3_endpoint_url: str = Field(default="http://localhost:9000", alias="S3_ENDPOINT_URL")
    s3_access_key: SecretStr | None = Field(default=None, alias="S3_ACCESS_KEY")
    s3_secret_key: SecretStr | None = Field(default=None, alias="S3_SECRET_KEY")
    s3_region: str = Field(default="us-east-1", alias="S3_REGION")
    s3_bucket: str = Field(default=contracts.LAKE_BUCKET, alias="S3_BUCKET")
    lake_prefix: str = Field(default=contracts.LAKE_PREFIX, alias="LAKE_PREFIX")
    summaries_prefix: str = Field(default=contracts.SUMMARIES_PREFIX, alias="SUMMARIES_PREFIX")
    minio_console_port: int = Field(default=9001, ge=1, le=65535, alias="MINIO_CONSOLE_PORT")
    # Drive folders of the local MinIO: 1 is a single drive; 4 to 16 are one erasure-coded
    # set, which goes on serving with a drive folder lost and heals a blank one by itself.
    minio_drives: int = Field(default=1, ge=1, le=16, alias="MINIO_DRIVES")

    # --- Spark ------------------------------------------------------------------------
    spark_master: str = Field(default="local[2]", alias="SPARK_MASTER")
    spark_trigger_seconds: float = Field(default=5.0, gt=0, alias="SPARK_TRIGGER_SECONDS")
    # How long the Spark query's Kafka clients wait for the broker before the query fails
    # (and the supervisor relaunches it): Kafka's default.api.timeout.ms, which also
    # bounds each request. The default is Kafka's own; drills shorten it.
    spark_kafka_timeout_seconds: float = Field(
        default=60.0, ge=1, le=3600, alias="SPARK_KAFKA_TIMEOUT_SECONDS"
    )
    spark_driver_memory: str = Field(default="2g", alias="SPARK_DRIVER_MEMORY")
    spark_shuffle_partitions: int = Field(default=4, ge=1, alias="SPARK_SHUFFLE_PARTITIONS")
    # Objects one writer task writes at once: a batch writes one object per (day,
    # symbol), and writing them one after the other made the PUTs most of a 50-symbol
    # batch's time (docs/benchmarks/spark.md). 1 writes them one at a time.
    spark_write_threads: int = Field(default=8, ge=1, le=64, alias="SPARK_WRITE_THREADS")
    spark_checkpoint_dir: Path | None = Field(default=None, alias="SPARK_CHECKPOINT_DIR")
    # The Spark driver's web UI (loopback in local mode; Spark takes the next free port
    # when this one is busy, and the heartbeat reports the one it got).
    spark_ui_port: int = Field(default=4040, ge=1, le=65535, alias="SPARK_UI_PORT")
    # The address the UI binds to in local mode. Only a container whose host publishes
    # the port on loopback (docker-compose.yml) needs another value (0.0.0.0).
    spark_ui_host: str = Field(default="127.0.0.1", alias="SPARK_UI_HOST")
    # The jars of Spark's Kafka source (comma-separated files or folders of jars);
    # `make up`, the Dagster stream job and the image set it, from the provisioned cache.
    spark_jars: Annotated[tuple[Path, ...], NoDecode] = Field(default=(), alias="SPARK_JARS")
    # How long a batch keeps retrying an object store that fails (outage, restart) before
    # the query fails; past it the supervisor restarts the job.
    s3_write_retry_seconds: float = Field(default=300.0, ge=0, alias="S3_WRITE_RETRY_SECONDS")

    # --- validity of trades (producer and Spark apply the same rule) --------------------
    trade_future_tolerance_seconds: float = Field(
        default=contracts.DEFAULT_FUTURE_TOLERANCE_MS / 1000,
        gt=0,
        alias="TRADE_FUTURE_TOLERANCE_SECONDS",
    )

    # --- control plane ----------------------------------------------------------------
    freshness_warn_seconds: int = Field(default=120, gt=0, alias="FRESHNESS_WARN_SECONDS")
    freshness_fail_seconds: int = Field(default=600, gt=0, alias="FRESHNESS_FAIL_SECONDS")
    alert_webhook_url: SecretStr | None = Field(default=None, alias="ALERT_WEBHOOK_URL")
    # Alert delivery is drained inside a sensor tick, which Dagster cuts off after its
    # evaluation timeout (60 s): timeout x messages per tick stays well below it.
    alert_post_timeout_seconds: float = Field(
        default=5.0, gt=0, le=20, alias="ALERT_POST_TIMEOUT_SECONDS"
    )
    alert_max_per_tick: int = Field(default=4, ge=1, le=10, alias="ALERT_MAX_PER_TICK")
    alert_retry_max_seconds: float = Field(default=300.0, gt=0, alias="ALERT_RETRY_MAX_SECONDS")
    # Supervision of the streams (producer, Spark): transient failures are retried for
    # ever, waiting base x 2^(n-1) seconds, at most the cap.
    supervisor_base_backoff_seconds: float = Field(
        default=5.0, ge=0, alias="SUPERVISOR_BASE_BACKOFF_SECONDS"
    )
    supervisor_max_backoff_seconds: float = Field(
        default=300.0, ge=0, le=3600, alias="SUPERVISOR_MAX_BACKOFF_SECONDS"
    )
    supervisor_alert_after_failures: int = Field(
        default=3, ge=1, alias="SUPERVISOR_ALERT_AFTER_FAILURES"
    )
    supervisor_stable_run_seconds: float = Field(
        default=300.0, gt=0, alias="SUPERVISOR_STABLE_RUN_SECONDS"
    )
    supervisor_stale_heartbeat_seconds: float = Field(
        default=120.0, gt=0, alias="SUPERVISOR_STALE_HEARTBEAT_SECONDS"
    )
    supervisor_startup_grace_seconds: float = Field(
        default=240.0, gt=0, alias="SUPERVISOR_STARTUP_GRACE_SECONDS"
    )
    supervisor_kill_grace_seconds: float = Field(
        default=30.0, ge=0, alias="SUPERVISOR_KILL_GRACE_SECONDS"
    )
    summaries_start_date: str = Field(default="2026-01-01", alias="SUMMARIES_START_DATE")
    # A closed day that got batches after its compaction is compacted again once its
    # newest batch is this old, so a backlog that is still landing is folded in one pass.
    late_batch_settle_seconds: int = Field(default=300, ge=0, alias="LATE_BATCH_SETTLE_SECONDS")
    # How often each sensor ticks (its minimum interval) and when the quality checks run.
    # The defaults suit a live platform; the drills set a few seconds, so that what they
    # wait for (a restart, an alert, a refresh) comes in seconds instead of minutes.
    # Dagster's daemon looks at its sensors about every 5 s: a smaller value ticks no faster.
    supervisor_sensor_interval_seconds: int = Field(
        default=10, gt=0, alias="SUPERVISOR_SENSOR_INTERVAL_SECONDS"
    )
    processed_trades_sensor_interval_seconds: int = Field(
        default=30, gt=0, alias="PROCESSED_TRADES_SENSOR_INTERVAL_SECONDS"
    )
    # The lake's maintenance (the open day's compaction, the lite vacuum, the log's
    # cleanup): each run rewrites the open day's files below the compaction target, so
    # more often means fewer small files for readers and more rewriting.
    lake_maintenance_sensor_interval_seconds: int = Field(
        default=300, gt=0, alias="LAKE_MAINTENANCE_SENSOR_INTERVAL_SECONDS"
    )
    summaries_refresh_sensor_interval_seconds: int = Field(
        default=60, gt=0, alias="SUMMARIES_REFRESH_SENSOR_INTERVAL_SECONDS"
    )
    late_data_sensor_interval_seconds: int = Field(
        default=60, gt=0, alias="LATE_DATA_SENSOR_INTERVAL_SECONDS"
    )
    alerts_sensor_interval_seconds: int = Field(
        default=30, gt=0, alias="ALERTS_SENSOR_INTERVAL_SECONDS"
    )
    quality_checks_cron: str = Field(default="*/10 * * * *", alias="QUALITY_CHECKS_CRON")
    # The weekly full vacuum (files no commit names, a week old): at a quiet hour, since it
    # lists every object of every table and holds the maintenance pool meanwhile.
    orphan_sweep_cron: str = Field(default="45 3 * * 0", alias="ORPHAN_SWEEP_CRON")
    # Dagster's run/event/schedule storage on PostgreSQL instead of SQLite files under
    # DAGSTER_HOME; dagster.yaml names the variable, never the value.
    dagster_postgres_url: SecretStr | None = Field(default=None, alias="DAGSTER_POSTGRES_URL")

    # --- dashboard --------------------------------------------------------------------
    dashboard_refresh_seconds: float = Field(
        default=5.0, ge=1, le=3600, alias="DASHBOARD_REFRESH_SECONDS"
    )
    dashboard_tail_minutes: int = Field(default=15, ge=1, le=120, alias="DASHBOARD_TAIL_MINUTES")
    dashboard_live_refresh_seconds: float = Field(
        default=1.0, ge=0.2, le=60, alias="DASHBOARD_LIVE_REFRESH_SECONDS"
    )
    # How often the dashboard's server pushes the feed's newest prices to every open page
    # (streamlit_app/push.py): between two refreshes of the live parts, the markets' prices
    # and changes follow the feed at this pace. 0 turns the push off.
    dashboard_live_push_seconds: float = Field(
        default=0.25, ge=0, le=10, alias="DASHBOARD_LIVE_PUSH_SECONDS"
    )

    # --- user interfaces (loopback ports in local mode) ---------------------------------
    dagster_port: int = Field(default=3000, ge=1, le=65535, alias="DAGSTER_PORT")
    streamlit_port: int = Field(default=8501, ge=1, le=65535, alias="STREAMLIT_PORT")

    # --- Prometheus metrics (loopback in local mode; 0 turns an endpoint off) -----------
    producer_metrics_port: int = Field(default=9461, ge=0, le=65535, alias="PRODUCER_METRICS_PORT")
    spark_metrics_port: int = Field(default=9462, ge=0, le=65535, alias="SPARK_METRICS_PORT")
    # The lake and the control plane (freshness, incidents, supervision), served by the
    # control-plane exporter that `make up` starts.
    control_metrics_port: int = Field(default=9463, ge=0, le=65535, alias="CONTROL_METRICS_PORT")
    # The address the endpoints bind to. Only a container whose host publishes the ports
    # on loopback (docker-compose.yml) needs another value (0.0.0.0).
    metrics_host: str = Field(default="127.0.0.1", min_length=1, alias="METRICS_HOST")
    # `make up` also starts a Prometheus server (provisioned like Kafka and MinIO) that
    # scrapes the endpoints above and loads the alert rules of monitoring/.
    prometheus_enabled: bool = Field(default=False, alias="PROMETHEUS_ENABLED")
    prometheus_port: int = Field(default=9090, ge=1, le=65535, alias="PROMETHEUS_PORT")
    # How often that Prometheus scrapes and evaluates its rules; drills set a second or two.
    prometheus_scrape_seconds: float = Field(
        default=15.0, ge=1, le=300, alias="PROMETHEUS_SCRAPE_SECONDS"
    )

    # --- local paths ------------------------------------------------------------------
    home: Path = Field(
        default_factory=lambda: Path.home() / ".local" / "share" / "finpipe", alias="FINPIPE_HOME"
    )
    cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "finpipe", alias="FINPIPE_CACHE_DIR"
    )

    @field_validator(
        "finnhub_api_token",
        "alert_webhook_url",
        "s3_access_key",
        "s3_secret_key",
        "simulator_token",
        "dagster_postgres_url",
        "kafka_replication_factor",
        "kafka_min_insync_replicas",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("finnhub_tickers", mode="before")
    @classmethod
    def _split_tickers(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, list | tuple):
            # Finnhub's symbols are upper case (``BINANCE:BTCUSDT``, ``OANDA:EUR_USD``,
            # ``BRK.B``); ``aapl`` in .env means AAPL, not a second symbol with no trades.
            symbols = tuple(dict.fromkeys(s.strip().upper() for s in value if s.strip()))
            if not symbols:
                raise ValueError("must name at least one symbol, e.g. BINANCE:BTCUSDT,AAPL")
            if len(symbols) > MAX_FINNHUB_SYMBOLS:
                raise ValueError(
                    f"names {len(symbols)} symbols; Finnhub allows {MAX_FINNHUB_SYMBOLS} per "
                    "connection"
                )
            bad = [s for s in symbols if any(ch.isspace() for ch in s) or "/" in s]
            if bad:
                raise ValueError(f"has invalid symbols {bad}: no spaces or '/'")
            return symbols
        return value

    @field_validator("dashboard_live_push_seconds")
    @classmethod
    def _push_pace(cls, value: float) -> float:
        if 0 < value < MIN_LIVE_PUSH_SECONDS:
            raise ValueError(
                f"must be 0 (no push) or at least {MIN_LIVE_PUSH_SECONDS} s: every open page "
                "gets the prices this often"
            )
        return value

    @field_validator("spark_jars", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(Path(part.strip()) for part in value.split(",") if part.strip())
        return value

    @field_validator("kafka_server")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(
                    f"'{server}' is not host:port; locally use localhost:9092, "
                    "in compose kafka:9092"
                )
        return value

    @field_validator("s3_endpoint_url", "finnhub_ws_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parsed = urllib.parse.urlsplit(value)
        if parsed.scheme not in {"http", "https", "ws", "wss"} or not parsed.hostname:
            raise ValueError(f"'{value}' is not a URL like http://localhost:9000")
        return value.rstrip("/")

    @field_validator("quality_checks_cron", "orphan_sweep_cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        # The shape only: the core knows nothing of Dagster, whose cron parser has the last
        # word when a schedule is built (finpipe_dagster.lake.schedules); it also takes
        # the @hourly kind of name.
        fields = value.split()
        named = len(fields) == 1 and fields[0].startswith("@")
        if not named and (len(fields) != 5 or not all(CRON_FIELD.fullmatch(f) for f in fields)):
            raise ValueError(
                f"'{value}' is not a cron expression of five fields (minute hour day-of-month "
                "month day-of-week), e.g. '*/10 * * * *' for every 10 minutes"
            )
        return value

    @field_validator("dagster_postgres_url")
    @classmethod
    def _check_postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        parsed = urllib.parse.urlsplit(value.get_secret_value())
        # The error never repeats the value: it may hold a password.
        if parsed.scheme not in {"postgresql", "postgresql+psycopg2"}:
            raise ValueError(
                "must start with postgresql:// (e.g. postgresql://dagster:PASSWORD@db:5432/"
                "dagster); postgres:// is not accepted by SQLAlchemy"
            )
        try:
            parsed.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError(
                "has an invalid port; use postgresql://USER:PASSWORD@HOST:PORT/DB"
            ) from None
        # A Unix socket is named by ?host=/run/postgresql instead of the URL's host.
        if not (parsed.hostname or "host=" in parsed.query) or not parsed.path.strip("/"):
            raise ValueError(
                "must name a host and a database: postgresql://USER:PASSWORD@HOST:PORT/DB"
            )
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed:
        # name the driver dagster-postgres ships (psycopg2) so the URL works as written.
        driver = "postgresql+psycopg2"
        return SecretStr(driver + value.get_secret_value().removeprefix(parsed.scheme))

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.freshness_warn_seconds >= self.freshness_fail_seconds:
            raise ValueError(
                "FRESHNESS_WARN_SECONDS must be smaller than FRESHNESS_FAIL_SECONDS "
                f"(got {self.freshness_warn_seconds} >= {self.freshness_fail_seconds})"
            )
        if self.kafka_replication_factor == 0:
            raise ValueError(
                "KAFKA_REPLICATION_FACTOR must be unset (3 on three or more brokers), "
                "-1 (the cluster's default) or at least 1"
            )
        replicas, in_sync = self.kafka_replication_factor, self.kafka_min_insync_replicas
        if replicas is not None and replicas > 0 and in_sync is not None and in_sync > replicas:
            raise ValueError(
                f"KAFKA_MIN_INSYNC_REPLICAS={in_sync} is more than KAFKA_REPLICATION_FACTOR="
                f"{replicas}: no write could ever be acknowledged; use at most {replicas}"
            )
        if self.minio_drives in (2, 3):
            raise ValueError(
                f"MINIO_DRIVES={self.minio_drives}: use 1 (one drive folder) or 4 to 16 (an "
                "erasure-coded set that survives a lost drive)"
            )
        self._check_local_kafka_cluster()
        if self.producer_log_max_mb < 2 * self.producer_log_segment_mb:
            raise ValueError(
                f"PRODUCER_LOG_MAX_MB={self.producer_log_max_mb} must hold at least two "
                f"segments of PRODUCER_LOG_SEGMENT_MB={self.producer_log_segment_mb}"
            )
        self._check_ports_distinct()
        keys_given = (self.s3_access_key is None, self.s3_secret_key is None)
        if keys_given[0] != keys_given[1]:
            raise ValueError("set both S3_ACCESS_KEY and S3_SECRET_KEY, or neither")
        if self.s3_access_key is None and not self.s3_is_local:
            raise ValueError(
                f"S3_ENDPOINT_URL={self.s3_endpoint_url} is not on loopback: set S3_ACCESS_KEY "
                "and S3_SECRET_KEY (the local minioadmin default is only used on loopback)"
            )
        if self.s3_uses_example_keys and not self.s3_is_local:
            raise ValueError(
                "S3_ACCESS_KEY / S3_SECRET_KEY hold default or example credentials (minioadmin,"
                " or docker-compose.yml's examples), refused outside local mode: "
                f"S3_ENDPOINT_URL={self.s3_endpoint_url} is not on loopback. Set both to keys "
                "of your own in .env (for compose, also the MinIO root user they create)"
            )
        return self

    def _check_local_kafka_cluster(self) -> None:
        """Brokers on loopback are started locally, each with its controller on its port + 1:
        no listed port may be another broker's controller."""
        servers = [s.strip().rpartition(":") for s in self.kafka_server.split(",")]
        if len(servers) < 2 or not all(is_loopback_host(h.strip("[]")) for h, _, _ in servers):
            return
        ports = [int(p) for _, _, p in servers]
        clash = sorted({p for p in ports if p - 1 in ports} | set(_repeated(ports)))
        if clash:
            raise ValueError(
                f"KAFKA_SERVER={self.kafka_server}: a local broker's controller listens on its "
                f"port + 1, so {clash} cannot be used; space the ports by two, e.g. "
                "localhost:9092,localhost:9094,localhost:9096"
            )

    def _check_ports_distinct(self) -> None:
        """Every metrics endpoint on a port of its own, not one another service listens on."""
        ports = {
            "SIMULATOR_PORT": self.simulator_port,
            "MINIO_CONSOLE_PORT": self.minio_console_port,
            "SPARK_UI_PORT": self.spark_ui_port,
            "DAGSTER_PORT": self.dagster_port,
            "STREAMLIT_PORT": self.streamlit_port,
            "PROMETHEUS_PORT": self.prometheus_port,
        }
        for name in ("PRODUCER_METRICS_PORT", "SPARK_METRICS_PORT", "CONTROL_METRICS_PORT"):
            port = getattr(self, name.lower())
            taken = [other for other, value in ports.items() if value == port]
            if port and taken:
                raise ValueError(
                    f"{name}={port} is also {taken[0]}: give each endpoint a port of its "
                    "own (0 turns a metrics endpoint off)"
                )
            ports[name] = port

    @property
    def s3_uses_example_keys(self) -> bool:
        keys = (self.s3_access_key, self.s3_secret_key)
        return any(k is not None and k.get_secret_value() in EXAMPLE_S3_KEYS for k in keys)

    # --- derived values ---------------------------------------------------------------

    @property
    def s3_is_local(self) -> bool:
        return is_loopback_host(urllib.parse.urlsplit(self.s3_endpoint_url).hostname)

    @property
    def s3_uses_tls(self) -> bool:
        """S3_ENDPOINT_URL is https: every S3 client (pyarrow, boto3, obstore) turns TLS on."""
        return self.s3_endpoint_url.startswith("https")

    @property
    def s3_credentials(self) -> tuple[str, str]:
        """(access key, secret key) — for clients only; never log the result."""
        if self.s3_access_key is None or self.s3_secret_key is None:
            return LOCAL_MINIO_KEY, LOCAL_MINIO_KEY
        return self.s3_access_key.get_secret_value(), self.s3_secret_key.get_secret_value()

    @property
    def uses_simulator(self) -> bool:
        return self.finnhub_api_token is None

    @property
    def feed_url(self) -> str:
        """The WebSocket URL without the token (safe to log)."""
        if self.uses_simulator:
            return f"ws://{self.simulator_host}:{self.simulator_port}"
        return self.finnhub_ws_url

    @property
    def trade_future_tolerance_ms(self) -> int:
        return int(self.trade_future_tolerance_seconds * 1000)

    @property
    def lake_uri(self) -> str:
        """The lake's address, for messages and as the identity of the lake that stored
        state (Dagster metadata, the checks' and summaries' state objects) was computed from."""
        return f"s3://{self.s3_bucket}/{self.lake_prefix}"

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    @property
    def producer_log_path(self) -> Path:
        return self.producer_log_dir or self.home / "producer-log"

    @property
    def checkpoint_dir(self) -> Path:
        return self.spark_checkpoint_dir or self.home / "spark-checkpoints" / "processed_trades"

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster")


def _repeated(values: list[int]) -> list[int]:
    return [v for i, v in enumerate(values) if v in values[:i]]


REMOVED_SETTINGS = {
    "COMPACTION_GRACE_SECONDS": (
        "the lake is a Delta table: replaced files are kept for its "
        "delta.deletedFileRetentionDuration (1 hour), then vacuumed"
    ),
    "ROLLING_COMPACTION_MIN_AGE_SECONDS": (
        "the lake is a Delta table: lake_maintenance_job compacts the open day with optimize"
    ),
    "ROLLING_COMPACTION_SEGMENT_BATCHES": (
        "the lake is a Delta table: lake_maintenance_job compacts the open day with optimize"
    ),
    "ROLLING_COMPACTION_SENSOR_INTERVAL_SECONDS": (
        "renamed LAKE_MAINTENANCE_SENSOR_INTERVAL_SECONDS (the whole lake maintenance)"
    ),
}
"""Variables an older finpipe read: set, they would be silently ignored, so they are refused
with what replaced them."""


def _removed_settings(env_file: str | None) -> list[str]:
    from dotenv import dotenv_values

    given = set(os.environ)
    if env_file and Path(env_file).is_file():
        given |= set(dotenv_values(env_file))
    return [
        f"  {name}: no longer a setting; {why}. Remove it."
        for name, why in REMOVED_SETTINGS.items()
        if name in given
    ]


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's errors into one message per bad variable.

    The environment wins over the `.env` file (``FINPIPE_ENV_FILE`` names another one,
    or none when empty); keyword overrides win over both.
    """
    env_file = os.environ.get("FINPIPE_ENV_FILE", ".env")
    removed = _removed_settings(env_file or None)
    if removed:
        raise SettingsError("invalid finpipe settings:\n" + "\n".join(removed))
    try:
        # Overrides may use field names or variable names. (Letting pydantic match field
        # names itself would also read them from the environment: HOME -> `home`.)
        aliases = {name: f.alias for name, f in Settings.model_fields.items() if f.alias}
        by_alias = {aliases.get(key, key): value for key, value in overrides.items()}
        return Settings(_env_file=env_file or None, **by_alias)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"]) or "settings"
            problems.append(f"  {where}: {err['msg'].removeprefix('Value error, ')}")
        raise SettingsError("invalid finpipe settings:\n" + "\n".join(problems)) from None
