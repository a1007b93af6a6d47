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
from dataclasses import dataclass
from pathlib import Path

from finpipe.lake import s3_client
from finpipe.settings import Settings, is_loopback_host
from infra import artifacts
from infra.processes import ManagedProcess, ServiceError, port_open, start_together
from producer import topics as producer_topics

KAFKA_HEAP = "-Xmx768m"


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]"), int(port)


# --- Kafka -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaNode:
    """One local KRaft server (broker and controller in one process). Its controller
    listens on the broker's port + 1; one broker keeps the folders it always had."""

    node_id: int
    host: str
    port: int
    root: Path
    name: str

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def conf_dir(self) -> Path:
        return self.root / "config"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def kafka_brokers(settings: Settings) -> list[tuple[str, int]]:
    """(host, port) of every bootstrap server in ``KAFKA_SERVER``."""
    return [_host_port(server) for server in settings.kafka_server.split(",")]


def kafka_endpoint(settings: Settings) -> tuple[str, int]:
    return kafka_brokers(settings)[0]


def kafka_is_local(settings: Settings) -> bool:
    """Every broker on loopback: `make up` starts them (several make a local cluster)."""
    return all(is_loopback_host(host) for host, _ in kafka_brokers(settings))


def kafka_nodes(settings: Settings) -> list[KafkaNode]:
    brokers = kafka_brokers(settings)
    if len(brokers) == 1:
        host, port = brokers[0]
        return [KafkaNode(1, host, port, settings.home / "kafka", "kafka")]
    return [
        KafkaNode(i, host, port, settings.home / "kafka" / f"broker-{i}", f"kafka-{i}")
        for i, (host, port) in enumerate(brokers, start=1)
    ]


def _kafka_properties(settings: Settings, node: KafkaNode, nodes: list[KafkaNode]) -> str:
    if len(nodes) == 1:
        # One voter, formatted with --standalone (a dynamic quorum of one).
        quorum = f"controller.quorum.bootstrap.servers=127.0.0.1:{node.controller_port}"
    else:
        # A static quorum: the voters come from this file at every start, so a broker
        # restarted with its data folder rejoins without a step of its own.
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)
        quorum = f"controller.quorum.voters={voters}"
    replicas = min(producer_topics.SAFE_REPLICAS, len(nodes))
    in_sync = producer_topics.min_insync_for(replicas)
    return f"""# written by finpipe (infra/services.py); edits are overwritten on start
process.roles=broker,controller
node.id={node.node_id}
{quorum}
listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}
advertised.listeners=PLAINTEXT://{node.address}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={node.data_dir}
num.partitions={settings.kafka_partitions}
default.replication.factor={replicas}
min.insync.replicas={in_sync}
offsets.topic.replication.factor={replicas}
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={in_sync}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={in_sync}
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
    while True:
        # Kafka's own ids never start with '-' (a command line would take it for a flag).
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


def _formatted_cluster_id(nodes: list[KafkaNode]) -> str | None:
    """The cluster id of a node formatted earlier: a node formatted now must join it."""
    for node in nodes:
        meta = node.data_dir / "meta.properties"
        if meta.exists():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
    return None


def kafka_ready(settings: Settings) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": settings.kafka_server})
        admin.list_topics(timeout=2)
        return True
    except Exception:
        return False


def kafka_node_ready(node: KafkaNode) -> bool:
    """The broker answers on its own address and the cluster counts it as a live broker."""
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient({"bootstrap.servers": node.address})
        return node.node_id in admin.list_topics(timeout=2).brokers
    except Exception:
        return False


def kafka_processes(settings: Settings) -> list[ManagedProcess]:
    """The local brokers (a dry description: nothing is fetched or written here)."""
    libs = artifacts.kafka_artifact(settings.cache_dir).root / "libs" / "*"
    return [
        ManagedProcess(
            name=node.name,
            argv=[
                shutil.which("java") or "java",
                KAFKA_HEAP,
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={node.conf_dir / 'log4j2.yaml'}",
                "-cp",
                str(libs),
                "kafka.Kafka",
                str(node.conf_dir / "server.properties"),
            ],
            home=settings.home,
            ports=[(node.host, node.port)],
            ready=lambda node=node: kafka_node_ready(node),
            ready_timeout=120,
        )
        for node in kafka_nodes(settings)
    ]


def kafka_process(settings: Settings) -> ManagedProcess:
    """The first local broker (with one broker: the broker)."""
    return kafka_processes(settings)[0]


def prepare_kafka(settings: Settings) -> None:
    """Fetch the jars, write each broker's config and format its storage on first start."""
    classpath = artifacts.kafka_classpath(settings.cache_dir)
    if not shutil.which("java"):
        raise ServiceError("Java 17+ is needed for Kafka: apt-get install openjdk-17-jre-headless")
    nodes = kafka_nodes(settings)
    cluster_id = _formatted_cluster_id(nodes) or _kafka_cluster_id()
    for node in nodes:
        node.conf_dir.mkdir(parents=True, exist_ok=True)
        (node.conf_dir / "server.properties").write_text(_kafka_properties(settings, node, nodes))
        (node.conf_dir / "log4j2.yaml").write_text(_log4j2_config())
        if not (node.data_dir / "meta.properties").exists():
            _format_kafka_storage(node, classpath, cluster_id, standalone=len(nodes) == 1)


def _format_kafka_storage(
    node: KafkaNode, classpath: str, cluster_id: str, *, standalone: bool
) -> None:
    node.data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        "java",
        f"-Dlog4j2.configurationFile={node.conf_dir / 'log4j2.yaml'}",
        "-cp",
        classpath,
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(node.conf_dir / "server.properties"),
    ]
    result = subprocess.run(
        [*argv, "--standalone"] if standalone else argv,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceError(
            f"formatting Kafka storage in {node.data_dir} failed:\n{result.stdout}{result.stderr}"
        )


def start_kafka(settings: Settings) -> None:
    """Prepare and start the local broker(s); several start together (see start_together)."""
    prepare_kafka(settings)
    start_together(kafka_processes(settings))


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


def minio_drives(settings: Settings) -> list[Path]:
    """The local MinIO's drive folders: one keeps the folder it always had."""
    root = settings.home / "minio"
    if settings.minio_drives == 1:
        return [root / "data"]
    return [root / f"drive-{i}" for i in range(1, settings.minio_drives + 1)]


def minio_process(settings: Settings) -> ManagedProcess:
    console_port = settings.minio_console_port
    host, port = s3_endpoint(settings)
    access, secret = settings.s3_credentials
    binary = artifacts.minio_artifact(settings.cache_dir).root / "minio"
    env = {
        "MINIO_ROOT_USER": access,
        "MINIO_ROOT_PASSWORD": secret,
        "MINIO_BROWSER_REDIRECT_URL": f"http://127.0.0.1:{console_port}",
    }
    if settings.minio_drives > 1:
        # Erasure-coded MinIO refuses drives on the root disk (a folder of `/` is one, as
        # here); the folders are meant to share a disk, so no drive counts as the root.
        env["MINIO_ROOTDRIVE_THRESHOLD_SIZE"] = "1"
    return ManagedProcess(
        name="minio",
        argv=[
            str(binary),
            "server",
            *(str(drive) for drive in minio_drives(settings)),
            "--address",
            f"127.0.0.1:{port}",
            "--console-address",
            f"127.0.0.1:{console_port}",
            "--quiet",
        ],
        home=settings.home,
        ports=[(host, port)],
        env=env,
        ready=lambda: minio_ready(settings),
        ready_timeout=60,
    )


def start_minio(settings: Settings) -> None:
    """Build MinIO if missing and start it on its drive folders."""
    artifacts.ensure_minio(settings.cache_dir)
    for drive in minio_drives(settings):
        drive.mkdir(parents=True, exist_ok=True)
    minio_process(settings).start()


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
        start_kafka(settings)
    elif not kafka_ready(settings):
        raise ServiceError(
            f"KAFKA_SERVER={settings.kafka_server} is not reachable from this host; "
            "locally use localhost:9092"
        )
    ensure_topics(settings)
    host, _ = s3_endpoint(settings)
    if is_loopback_host(host):
        start_minio(settings)
    elif not port_open(*s3_endpoint(settings), timeout=3):
        raise ServiceError(f"S3_ENDPOINT_URL={settings.s3_endpoint_url} is not reachable")
    ensure_bucket(settings)


def infrastructure_processes(settings: Settings) -> list[ManagedProcess]:
    return [*kafka_processes(settings), minio_process(settings)]
