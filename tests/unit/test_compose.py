"""docker-compose.yml: Kafka in KRaft mode, Redis with AOF, topics created, two workers,
Prometheus scraping them and Grafana with a provisioned dashboard."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
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


# -- monitoring: Prometheus scraping the workers, Grafana with a provisioned dashboard ------------

DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "segmenter.json"


def worker_names(compose: dict[str, Any]) -> list[str]:
    return sorted(
        name
        for name, svc in compose["services"].items()
        if command_text(svc).split()[-1:] == ["worker"]
    )


def mounted(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts (relative to the repo)."""
    found: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith("."):
            found[target] = (REPO / source).resolve()
    return found


def exported_metrics() -> set[str]:
    """The metric families a worker's /metrics really exposes (rendered, not guessed)."""
    from streams.api.metrics import render
    from streams.pipeline.metrics import Metrics

    text = render(Metrics(), {"s": 1}, ["s"], {0: 0}, True)
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_prometheus_scrapes_every_worker(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    config_path = mounted(prometheus)["/etc/prometheus/prometheus.yml"]
    assert config_path == DEPLOY / "prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in command_text(prometheus)
    config = yaml.safe_load(config_path.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["segmenter"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    ports = {env_of(compose["services"][w])["SEGMENTER_HTTP_PORT"] for w in worker_names(compose)}
    assert targets == {f"{w}:{port}" for w in worker_names(compose) for port in ports}


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")
    mounts = mounted(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["uid"] == "prometheus"
    providers = yaml.safe_load((provisioning / "dashboards" / "segmenter.yml").read_text())
    dashboards_path = providers["providers"][0]["options"]["path"]
    assert mounts[dashboards_path] == DASHBOARD.parent
    assert "prometheus" in grafana["depends_on"]


def panel_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    panels = list(dashboard["panels"])
    for panel in list(panels):
        panels.extend(panel.get("panels", []))  # panels nested in collapsed rows
    return [
        (panel["title"], target["expr"])
        for panel in panels
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def test_dashboard_panels_use_metrics_the_worker_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_metrics()
    exprs = panel_exprs(dashboard)
    assert exprs
    for title, expr in exprs:
        used = set(re.findall(r"\bsegmenter_[a-z0-9_]+", expr))
        assert used, (title, expr)
        assert used <= exported, (title, expr, used - exported)
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "prometheus", panel["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_covers_what_operators_watch() -> None:
    everything = " ".join(expr for _, expr in panel_exprs(json.loads(DASHBOARD.read_text())))
    for wanted in (
        "segmenter_segment_size",  # segment sizes
        "rate(segmenter_events_total",  # events/s
        "by (trigger) (rate(segmenter_migrations_total",  # migrations by trigger
        "segmenter_dlq_total",  # DLQ
        "segmenter_consumer_lag",  # consumer lag
        "segmenter_timer_delay_max_seconds",  # timer delay
    ):
        assert wanted in everything, wanted


def test_compose_file_passes_docker_compose_config(tmp_path: Path) -> None:
    """``docker compose config`` when the plugin is installed (parsing above covers the rest)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(
        [docker, "compose", "-f", str(REPO / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_an_api_process_serves_streams_and_the_collector(compose: dict[str, Any]) -> None:
    """``segmenter api`` beside the workers, its secrets passed through from the environment
    (unset: the feature is off), on a host port of its own and with room for many streams."""
    from streams.settings import Settings

    api = compose["services"]["api"]
    assert command_text(api) == "segmenter api"
    env = api["environment"]
    assert env["SEGMENTER_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["SEGMENTER_REDIS_URL"] == "redis://redis:6379/0"
    known = {f"SEGMENTER_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known
    for secret in ("SEGMENTER_WRITE_KEYS", "SEGMENTER_VISITOR_SECRET", "SEGMENTER_API_KEY"):
        assert env[secret] is None, secret  # passed through from the shell or .env, never baked in
    worker_ports = {
        port.split(":")[0]
        for name in worker_names(compose)
        for port in compose["services"][name]["ports"]
    }
    assert {port.split(":")[0] for port in api["ports"]}.isdisjoint(worker_ports)
    assert api["ulimits"]["nofile"]["soft"] > Settings().visitor_max_connections
