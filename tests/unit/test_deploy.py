"""deploy/: what can be checked without a container engine: YAML, paths, names, promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import parse_config
from tests.system_packages import require_binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ENV = {"GATEWAY_APP_KEY_SHA256": "a" * 64, "OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-y"}
GATEWAY_SERVICES = ("gateway-1", "gateway-2")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def test_compose_runs_redis_two_gateways_prometheus_and_grafana() -> None:
    compose = load(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"redis", *GATEWAY_SERVICES, "prometheus", "grafana"}
    for name in GATEWAY_SERVICES:
        gateway = services[name]
        assert gateway["image"] == "llm-gateway:latest"
        assert (DEPLOY / gateway["build"]).resolve() == ROOT
        assert gateway["environment"]["GATEWAY_STORAGE_URL"] == "redis://redis:6379/0"


def test_every_third_party_image_is_pinned_to_a_version() -> None:
    images = [s["image"] for s in load(DEPLOY / "compose.yaml")["services"].values()]
    for doc in manifests().values():
        if doc["kind"] == "Deployment":
            images += [c["image"] for c in doc["spec"]["template"]["spec"]["containers"]]
    for image in images:
        if image == "llm-gateway:latest":  # built from this repository (`build: ..`)
            continue
        repository, _, tag = image.rpartition(":")
        assert repository, image
        assert tag not in ("", "latest"), image


def test_every_bind_mount_in_compose_exists() -> None:
    compose = load(DEPLOY / "compose.yaml")
    named = set(compose.get("volumes", {}))
    checked = 0
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source in named:
                continue
            assert (DEPLOY / source).exists(), source
            checked += 1
    assert checked >= 5


def test_grafana_mounts_are_where_the_provisioning_files_look() -> None:
    grafana = load(DEPLOY / "compose.yaml")["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith(".."))
    provider = load(ROOT / "grafana/provisioning/dashboards/llm-gateway.yaml")
    dashboards_dir = provider["providers"][0]["options"]["path"]
    assert mounts["../grafana/dashboards"] == dashboards_dir
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "grafana/dashboards" / Path(home).name).is_file()
    assert home.startswith(dashboards_dir)


def test_prometheus_scrapes_both_gateway_replicas() -> None:
    config = load(DEPLOY / "prometheus/prometheus.yml")
    targets = [
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    ]
    assert sorted(targets) == [f"{name}:8080" for name in GATEWAY_SERVICES]


def test_promtool_accepts_the_shipped_prometheus_config() -> None:
    promtool = require_binary("promtool", "prometheus")
    done = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_deploy_gateway_config_is_valid() -> None:
    config = parse_config(load(DEPLOY / "gateway.yaml"), "deploy/gateway.yaml", ENV)
    assert config.storage.url == "redis://redis:6379/0"
    assert config.server.port == 8080


def test_config_without_the_app_key_hash_refuses_to_start() -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match="GATEWAY_APP_KEY_SHA256"):
        parse_config(load(DEPLOY / "gateway.yaml"), "deploy/gateway.yaml", {})


def test_kubernetes_manifests_have_every_required_kind() -> None:
    kinds = {kind for kind, _ in manifests()}
    required = {"Deployment", "Service", "ConfigMap", "Secret"}
    assert required | {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    listed = load(DEPLOY / "k8s/kustomization.yaml")["resources"]
    on_disk = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def test_kubernetes_names_and_selectors_fit_together() -> None:
    found = manifests()
    deployment = found[("Deployment", "llm-gateway")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = found[("Service", "llm-gateway")]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    pdb = found[("PodDisruptionBudget", "llm-gateway")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    target = found[("HorizontalPodAutoscaler", "llm-gateway")]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "llm-gateway")
    pod = deployment["spec"]["template"]["spec"]
    secret_refs = [e["secretRef"]["name"] for c in pod["containers"] for e in c["envFrom"]]
    config_maps = [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
    assert all(("Secret", name) in found for name in secret_refs)
    assert all(("ConfigMap", name) in found for name in config_maps)


def test_kubernetes_probes_hit_gateway_health_endpoints_on_a_named_port() -> None:
    container = manifests()[("Deployment", "llm-gateway")]["spec"]["template"]["spec"][
        "containers"
    ][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert ports["http"] == 8080
    config_arg = container["command"][container["command"].index("--config") + 1]
    mount = container["volumeMounts"][0]["mountPath"]
    assert Path(config_arg).parent == Path(mount)


def test_kubernetes_config_map_holds_a_valid_config_fed_by_the_secret() -> None:
    found = manifests()
    config_map = found[("ConfigMap", "llm-gateway-config")]
    data = yaml.safe_load(config_map["data"]["gateway.yaml"])
    secret = found[("Secret", "llm-gateway-secrets")]["stringData"]
    config = parse_config(data, "configmap.yaml", secret)
    assert config.storage.url.startswith("redis://llm-gateway-redis:")
    assert ("Service", "llm-gateway-redis") in found


def test_every_shipped_gateway_command_listens_on_all_interfaces() -> None:
    """Not left to the config: a replacement config without `server.host` would give pods
    that never answer their probes, and replicas Prometheus cannot reach."""
    compose = load(DEPLOY / "compose.yaml")["services"]
    container = manifests()[("Deployment", "llm-gateway")]["spec"]["template"]["spec"][
        "containers"
    ][0]
    cmd_line = next(
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")
    )
    commands = [compose[name]["command"] for name in GATEWAY_SERVICES]
    commands += [container["command"], yaml.safe_load(cmd_line.removeprefix("CMD "))]
    for command in commands:
        assert command[:2] == ["gateway", "serve"]
        assert command[command.index("--host") + 1] == "0.0.0.0"
