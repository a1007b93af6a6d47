"""A KAFKA_SERVER of several loopback addresses is a local KRaft cluster: one broker per
address, a static quorum of their controllers, internal topics replicated like finpipe's."""

from __future__ import annotations

from pathlib import Path

from finpipe.settings import load_settings
from infra import services
from infra.services import _kafka_properties, kafka_nodes
from infra.stack import components

CLUSTER = "localhost:9092,localhost:9094,localhost:9096"


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key: value for key, value in pairs if not key.startswith("#")}


def test_one_broker_keeps_its_folders_and_its_quorum_of_one(tmp_path: Path) -> None:
    settings = load_settings(FINPIPE_HOME=tmp_path, KAFKA_SERVER="localhost:9092")
    [node] = kafka_nodes(settings)
    assert (node.name, node.root, node.controller_port) == ("kafka", tmp_path / "kafka", 9093)
    conf = properties(_kafka_properties(settings, node, [node]))
    assert conf["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert "controller.quorum.voters" not in conf
    assert conf["offsets.topic.replication.factor"] == conf["default.replication.factor"] == "1"
    assert conf["min.insync.replicas"] == "1"


def test_three_loopback_addresses_are_three_brokers_of_one_quorum(tmp_path: Path) -> None:
    settings = load_settings(FINPIPE_HOME=tmp_path, KAFKA_SERVER=CLUSTER)
    assert services.kafka_is_local(settings)
    nodes = kafka_nodes(settings)
    assert [(n.node_id, n.name, n.port) for n in nodes] == [
        (1, "kafka-1", 9092), (2, "kafka-2", 9094), (3, "kafka-3", 9096)
    ]  # fmt: skip
    assert len({n.data_dir for n in nodes}) == 3
    for node in nodes:
        conf = properties(_kafka_properties(settings, node, nodes))
        assert conf["node.id"] == str(node.node_id)
        assert conf["controller.quorum.voters"] == (
            "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
        )
        assert conf["advertised.listeners"] == f"PLAINTEXT://localhost:{node.port}"
        for key in ("default", "offsets.topic", "transaction.state.log"):
            replication = f"{key}.replication.factor"
            assert conf[replication] == "3", replication
        assert conf["min.insync.replicas"] == conf["transaction.state.log.min.isr"] == "2"
    names = [c.name for c in components(settings) if c.infrastructure]
    assert names == ["kafka-1", "kafka-2", "kafka-3", "minio"]


def test_a_cluster_off_loopback_is_external(tmp_path: Path) -> None:
    settings = load_settings(FINPIPE_HOME=tmp_path, KAFKA_SERVER="b1:9092,b2:9092,b3:9092")
    assert not services.kafka_is_local(settings)
    kafka = [c for c in components(settings) if c.name == "kafka"]
    assert len(kafka) == 1 and kafka[0].process is None
