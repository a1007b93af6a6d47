"""The platform's infrastructure services: Kafka (KRaft) and MinIO, local or external.

A service whose endpoint setting points at loopback is provisioned and started here;
one that points elsewhere is external and only checked for reachability.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from finpipe.lake import s3_client
from finpipe.settings import Settings, is_loopback_host
from infra import artifacts
from infra.processes import ManagedProcess, ServiceError, port_open
from producer import topics as producer_topics

KAFKA_HEAP = "-Xmx768m"


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]"), int(port)


# --- Kafka -------------------------------------------------------------------------------


def kafka_endpoint(settings: Settings) -> tuple[str, int]:
    return _host_port(settings.kafka_server.split(",")[0])


def kafka_is_local(settings: Settings) -> bool:
    return "," not in settings.kafka_server and is_loopback_host(kafka_endpoint(settings)[0])


def _kafka_properties(settings: Settings, data_dir: Path) -> str:
    host, port = kafka_endpoint(settings)
    controller = port + 1
    return f"""# written by finpipe (infra/services.py); edits are overwritten on start
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data_dir}
num.partitions={settings.kafka_partitions}
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
"""


def _log4j2_config(log_level: str = "INFO") -> str:
    return f"""Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: {log_level}
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: org.apache.kafka
        level: WARN
      - name: kafka
        level: WARN
      - name: state.change.logger
        level: WARN
"""


def _kafka_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def kafka_ready(settings: Settings) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": settings.kafka_server})
        admin.list_topics(timeout=2)
        return True
    except Exception:
        return False


def kafka_process(settings: Settings) -> ManagedProcess:
    """The local broker (a dry description: nothing is fetched or written here)."""
    host, port = kafka_endpoint(settings)
    conf_dir = settings.home / "kafka" / "config"
    libs = artifacts.kafka_artifact(settings.cache_dir).root / "libs" / "*"
    return ManagedProcess(
        name="kafka",
        argv=[
            shutil.which("java") or "java",
            KAFKA_HEAP,
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={conf_dir / 'log4j2.yaml'}",
            "-cp",
            str(libs),
            "kafka.Kafka",
            str(conf_dir / "server.properties"),
        ],
        home=settings.home,
        ports=[(host, port)],
        ready=lambda: kafka_ready(settings),
        ready_timeout=120,
    )


def prepare_kafka(settings: Settings) -> None:
    """Fetch the jars, write the config and format the storage on first start."""
    classpath = artifacts.kafka_classpath(settings.cache_dir)
    if not shutil.which("java"):
        raise ServiceError("Java 17+ is needed for Kafka: apt-get install openjdk-17-jre-headless")
    conf_dir = settings.home / "kafka" / "config"
    data_dir = settings.home / "kafka" / "data"
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "server.properties").write_text(_kafka_properties(settings, data_dir))
    (conf_dir / "log4j2.yaml").write_text(_log4j2_config())
    if (data_dir / "meta.properties").exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            "java",
            f"-Dlog4j2.configurationFile={conf_dir / 'log4j2.yaml'}",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _kafka_cluster_id(),
            "-c",
            str(conf_dir / "server.properties"),
            "--standalone",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceError(
            f"formatting Kafka storage in {data_dir} failed:\n{result.stdout}{result.stderr}"
        )


def ensure_topics(settings: Settings, topics: list[str] | None = None) -> None:
    """Create the trade and dead-letter topics if missing (the producer's admin step)."""
    try:
        producer_topics.ensure_topics(settings, topics)
    except producer_topics.TopicError as exc:
        raise ServiceError(str(exc)) from exc


# --- MinIO -------------------------------------------------------------------------------


def s3_endpoint(settings: Settings) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(settings.s3_endpoint_url)
    default = 443 if settings.s3_uses_tls else 80
    return parsed.hostname or "localhost", parsed.port or default


def minio_ready(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(
            f"{settings.s3_endpoint_url}/minio/health/ready", timeout=2
        ) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def minio_process(settings: Settings) -> ManagedProcess:
    console_port = settings.minio_console_port
    host, port = s3_endpoint(settings)
    access, secret = settings.s3_credentials
    binary = artifacts.minio_artifact(settings.cache_dir).root / "minio"
    return ManagedProcess(
        name="minio",
        argv=[
            str(binary),
            "server",
            str(settings.home / "minio" / "data"),
            "--address",
            f"127.0.0.1:{port}",
            "--console-address",
            f"127.0.0.1:{console_port}",
            "--quiet",
        ],
        home=settings.home,
        ports=[(host, port)],
        env={
            "MINIO_ROOT_USER": access,
            "MINIO_ROOT_PASSWORD": secret,
            "MINIO_BROWSER_REDIRECT_URL": f"http://127.0.0.1:{console_port}",
        },
        ready=lambda: minio_ready(settings),
        ready_timeout=60,
    )


def ensure_bucket(settings: Settings) -> None:
    """Create the (private) lake bucket if missing."""
    client = s3_client(settings)
    try:
        client.head_bucket(Bucket=settings.s3_bucket)
    except client.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in {"404", "NoSuchBucket", "NotFound"}:
            raise ServiceError(
                f"cannot access bucket {settings.s3_bucket} at {settings.s3_endpoint_url}: "
                f"{code}. Check S3_ACCESS_KEY / S3_SECRET_KEY."
            ) from exc
        client.create_bucket(Bucket=settings.s3_bucket)


# --- the infrastructure as a whole -------------------------------------------------------


def start_infrastructure(settings: Settings) -> None:
    """Bring Kafka and MinIO up (or check the external ones), topics and bucket included."""
    if kafka_is_local(settings):
        prepare_kafka(settings)
        kafka_process(settings).start()
    elif not kafka_ready(settings):
        raise ServiceError(
            f"KAFKA_SERVER={settings.kafka_server} is not reachable from this host; "
            "locally use localhost:9092"
        )
    ensure_topics(settings)
    host, _ = s3_endpoint(settings)
    if is_loopback_host(host):
        artifacts.ensure_minio(settings.cache_dir)
        minio_process(settings).start()
    elif not port_open(*s3_endpoint(settings), timeout=3):
        raise ServiceError(f"S3_ENDPOINT_URL={settings.s3_endpoint_url} is not reachable")
    ensure_bucket(settings)


def infrastructure_processes(settings: Settings) -> list[ManagedProcess]:
    return [kafka_process(settings), minio_process(settings)]
