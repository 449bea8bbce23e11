"""docker-compose.yml: Kafka in KRaft mode, Redis with AOF, topics created, two workers."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command") or ""
    return command if isinstance(command, str) else " ".join(map(str, command))


def test_kafka_runs_in_kraft_mode(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert not any("zookeeper" in name for name in services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    assert "healthcheck" in kafka


def test_topics_are_created_once(compose: dict[str, Any]) -> None:
    init = compose["services"]["kafka-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = command_text(init)
    for topic in ("segmenter.events", "segmenter.migrations", "segmenter.events.dlq"):
        assert topic in script
    assert "--create" in script and "--if-not-exists" in script


def test_redis_persists_with_aof(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    args = command_text(redis).split()
    assert args[args.index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis["volumes"])


def test_two_workers_with_the_stack_addresses(compose: dict[str, Any]) -> None:
    workers = {
        name: svc
        for name, svc in compose["services"].items()
        if command_text(svc).split()[-1:] == ["worker"]
    }
    assert len(workers) == 2
    host_ports: set[str] = set()
    for svc in workers.values():
        env = env_of(svc)
        assert env["SEGMENTER_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["SEGMENTER_REDIS_URL"] == "redis://redis:6379/0"
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (REPO / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        assert svc["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        host_ports.update(port.split(":")[0] for port in svc["ports"])
    assert len(host_ports) == 2  # each worker on its own host port


def test_dockerfile_installs_the_project() -> None:
    text = (REPO / "deploy" / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(line.startswith("RUN pip install .") for line in lines)
    assert 'CMD ["segmenter", "worker"]' in lines
