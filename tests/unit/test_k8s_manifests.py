"""deploy/k8s: every manifest parses; the worker has probes, resources, known settings, rules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.engine import parse_rules
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
NAMESPACE = "segmenter"


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict), path
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            found.append(doc)
    return found


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, (kind, name, [o["metadata"]["name"] for o in matches])
    return matches[0]


def worker_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment", "segmenter-worker")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


KNOWN_ENV = {f"SEGMENTER_{name.upper()}" for name in Settings.model_fields}


def test_every_object_is_namespaced_and_the_kustomization_lists_every_file(
    objects: list[dict[str, Any]],
) -> None:
    kinds = {o["kind"] for o in objects}
    assert {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    } <= kinds
    assert one(objects, "Namespace")["metadata"]["name"] == NAMESPACE
    for o in objects:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == NAMESPACE, o["metadata"]["name"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifest_files())


def test_the_worker_has_probes_on_healthz(objects: list[dict[str, Any]]) -> None:
    container = worker_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert get["port"] in ports or get["port"] in ports.values(), probe
    liveness = container["livenessProbe"]
    # generous: a worker waiting for a rebalance must not be restarted for it
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 30


def test_the_worker_has_requests_and_limits(objects: list[dict[str, Any]]) -> None:
    resources = worker_container(objects)["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[bound]), bound


def test_every_setting_the_worker_gets_exists(objects: list[dict[str, Any]]) -> None:
    container = worker_container(objects)
    names = [e["name"] for e in container.get("env", [])]
    for source in container.get("envFrom", []):
        config = one(objects, "ConfigMap", source["configMapRef"]["name"])
        names.extend(config["data"])
    assert names
    unknown = sorted(n for n in names if n not in KNOWN_ENV)
    assert not unknown, f"not settings of streams/settings.py: {unknown}"
    for required in ("SEGMENTER_KAFKA_BOOTSTRAP", "SEGMENTER_REDIS_URL", "SEGMENTER_API_KEY"):
        assert required in names
    ports = {p["containerPort"] for p in container["ports"]}
    config = one(objects, "ConfigMap", "segmenter-config")["data"]
    assert int(config["SEGMENTER_HTTP_PORT"]) in ports
    assert config["SEGMENTER_HTTP_HOST"] == "0.0.0.0"


def test_the_api_key_comes_from_the_secret(objects: list[dict[str, Any]]) -> None:
    env = {e["name"]: e for e in worker_container(objects)["env"]}
    ref = env["SEGMENTER_API_KEY"]["valueFrom"]["secretKeyRef"]
    secret = one(objects, "Secret", ref["name"])
    assert ref["key"] in secret.get("stringData", {}) or ref["key"] in secret.get("data", {})


def test_the_rules_config_map_is_mounted_and_valid(objects: list[dict[str, Any]]) -> None:
    deployment = one(objects, "Deployment", "segmenter-worker")
    pod = deployment["spec"]["template"]["spec"]
    container = worker_container(objects)
    config = one(objects, "ConfigMap", "segmenter-config")["data"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    rules_volume = next(n for n, path in mounts.items() if path == config["SEGMENTER_RULES"])
    rules = one(objects, "ConfigMap", volumes[rules_volume]["configMap"]["name"])
    assert rules["data"]
    assert all(name.endswith((".yaml", ".yml")) for name in rules["data"])
    parse_rules(dict(rules["data"]))  # raises on any problem


def test_the_service_and_the_disruption_budget_select_the_workers(
    objects: list[dict[str, Any]],
) -> None:
    deployment = one(objects, "Deployment", "segmenter-worker")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] >= 2
    service = one(objects, "Service", "segmenter")
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in worker_container(objects)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    budget = one(objects, "PodDisruptionBudget")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "maxUnavailable" in budget["spec"] or "minAvailable" in budget["spec"]


def test_kustomize_builds_the_manifests() -> None:
    """``kubectl kustomize`` (offline) when kubectl is installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted(kinds) == sorted(
        doc["kind"]
        for path in manifest_files()
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    )


def test_the_api_deployment_serves_lookups_streams_and_the_collector(
    objects: list[dict[str, Any]],
) -> None:
    """``segmenter api`` runs beside the workers with real settings, the shared secrets and a
    Service of its own (the browsers' visitor streams and the collector go there)."""
    deployment = one(objects, "Deployment", "segmenter-api")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["segmenter", "api"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    env = {e["name"]: e for e in container["env"]}
    assert set(env) <= KNOWN_ENV
    for name in ("SEGMENTER_API_KEY", "SEGMENTER_VISITOR_SECRET", "SEGMENTER_WRITE_KEYS"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in one(objects, "Secret", ref["name"])["stringData"], name
    worker_env = {e["name"]: e for e in worker_container(objects)["env"]}
    # tokens minted by a worker must verify on an API process: one secret for both
    assert worker_env["SEGMENTER_VISITOR_SECRET"] == env["SEGMENTER_VISITOR_SECRET"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    service = one(objects, "Service", "segmenter-api")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert not service["spec"]["selector"].items() <= worker_labels(objects).items()


def worker_labels(objects: list[dict[str, Any]]) -> dict[str, str]:
    deployment = one(objects, "Deployment", "segmenter-worker")
    return dict(deployment["spec"]["template"]["metadata"]["labels"])
