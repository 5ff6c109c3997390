"""config/kubernetes (and the PrometheusRule it ships) checked against Kubernetes' API
schemas (kubernetes-validate) and against the gateway itself: ports, probe paths, the policy
file the container reads, the secret files, the drain time, the PostgreSQL the store URL
names, the Ingress's limits. The README's Kubernetes steps that need no cluster run here
too: the image it builds is the one deployed, its store Secret fits the manifests, and its
chat `curl` gets an answer from the production policy. (The metrics the rules and the
dashboard use: tests/test_metrics_in_rules.py.)

kustomize is not needed: tests/support/kustomize.py renders the subset this folder uses.
Where a real `kustomize` binary is on PATH its output is checked too.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from gateway.policy import ServerConfig
from tests.support.kustomize import Manifest, build, kustomization, load_docs, name_of, split_image
from tests.support.processes import Gateway, base_env, free_port, poll, start_gateway
from tests.support.promql_exprs import (
    RULES_FILE,
    load_rules,
)
from tests.test_readme import all_commands

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "config" / "kubernetes"
COMPONENTS = K8S / "components"
REDIS_COMPONENT = COMPONENTS / "redis"
POSTGRES_COMPONENT = COMPONENTS / "postgres"
INGRESS_COMPONENT = COMPONENTS / "ingress-nginx"
EXAMPLES = ("secret.example.yaml", "store-secret.example.yaml")

# The gateway as these manifests must see it (SPEC §2-§5 and the image's conventions).
CONFIG_PATH = "/etc/chatkit-gateway/gateway.yaml"
API_KEY_FILE = "/run/secrets/openai/api-key"
IMAGE = "registry.example.com/chatkit-gateway:0.1.0"  # kustomization.yaml's `images:`
AGENT_ROUTE = "assistant"
STORE_SECRET = "chatkit-gateway-store"
POSTGRES = "chatkit-gateway-postgres"
RUN_AS_USER = 10001
OPS_PORT = 8081  # server.ops_port: probes and the ServiceMonitor's scrapes

# Kubernetes versions whose schemas the manifests must pass: the oldest supported (the
# preStop `sleep` action is on by default from 1.30) and the newest kubernetes-validate has.
K8S_VERSIONS = ("1.30.0", str(kubernetes_validate.latest_version()))
CRD_API_GROUPS = ("monitoring.coreos.com/",)


# base: the production kustomization as shipped (PostgreSQL included); the others add the
# optional components as an overlay would.
VARIANTS: Mapping[str, tuple[Path, ...]] = {
    "base": (),
    "redis": (REDIS_COMPONENT,),
    "ingress": (INGRESS_COMPONENT,),
}


@cache
def _built(variant: str) -> tuple[Manifest, ...]:
    return tuple(build(K8S, VARIANTS[variant]))


def rendered(variant: str = "base") -> list[Manifest]:
    return copy.deepcopy(list(_built(variant)))


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    hits = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def gateway_deployment(docs: list[Manifest]) -> Manifest:
    return one(docs, "Deployment", "chatkit-gateway")


def gateway_container(docs: list[Manifest]) -> dict[str, Any]:
    containers = gateway_deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container = containers[0]
    assert isinstance(container, dict)
    return container


def configmap_policy_text(docs: list[Manifest]) -> str:
    """The gateway.yaml that the container reads, followed through volume and mount."""
    container = gateway_container(docs)
    argv = [*container.get("command", []), *container.get("args", [])]
    config = argv[argv.index("--config") + 1]
    volume = _volume_for(docs, config)
    assert "configMap" in volume, f"{config} is not on a ConfigMap volume"
    cm = one(docs, "ConfigMap", volume["configMap"]["name"])
    key = _key_in_volume(volume["configMap"], _relative_to_mount(container, config))
    assert key in cm["data"], f"ConfigMap {cm['metadata']['name']} has no key {key}"
    text = cm["data"][key]
    assert isinstance(text, str)
    return text


def _mount_for(container: Mapping[str, Any], path: str) -> dict[str, Any]:
    mounts = [
        m
        for m in container.get("volumeMounts", [])
        if path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert mounts, f"no volumeMount holds {path}"
    mount: dict[str, Any] = max(mounts, key=lambda m: len(m["mountPath"]))
    assert "subPath" not in mount, "subPath mounts never see ConfigMap/Secret updates"
    return mount


def _relative_to_mount(container: Mapping[str, Any], path: str) -> str:
    return path[len(_mount_for(container, path)["mountPath"].rstrip("/")) + 1 :]


def _volume_for(docs: list[Manifest], path: str) -> dict[str, Any]:
    mount = _mount_for(gateway_container(docs), path)
    volumes = gateway_deployment(docs)["spec"]["template"]["spec"]["volumes"]
    volume = next(v for v in volumes if v["name"] == mount["name"])
    assert isinstance(volume, dict)
    return volume


def _key_in_volume(source: Mapping[str, Any], relative: str) -> str:
    """The ConfigMap/Secret key that appears at `relative` inside the volume."""
    items = source.get("items")
    if items is None:
        return relative
    keys = [i["key"] for i in items if i["path"] == relative]
    assert keys, f"the volume's items put nothing at {relative}"
    return str(keys[0])


def policy(docs: list[Manifest]) -> dict[str, Any]:
    """The ConfigMap's gateway.yaml, `${VAR:-default}` resolved from the container's env."""
    env = {
        e["name"]: str(e["value"]) for e in gateway_container(docs).get("env", []) if "value" in e
    }

    def resolve(m: re.Match[str]) -> str:
        default = m.group(2) if m.group(2) is not None else m.group(0)
        return env.get(m.group(1), default)

    text = re.sub(
        r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}", resolve, configmap_policy_text(docs)
    )
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_labels(
    docs: list[Manifest], name: str = "chatkit-gateway", kind: str = "Deployment"
) -> dict[str, str]:
    labels = one(docs, kind, name)["spec"]["template"]["metadata"]["labels"]
    assert isinstance(labels, dict)
    return labels


def prestop_sleep_seconds(container: Mapping[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    assert command[:1] == ["sleep"], f"preStop is not a sleep: {pre_stop}"
    return float(command[1])


# --------------------------------------------------------------------------- kustomization


def test_every_manifest_file_is_used_or_an_example() -> None:
    listed = set(kustomization(K8S)["resources"]) | {"kustomization.yaml", "gateway.yaml"}
    examples = set(EXAMPLES)
    files = {p.name for p in K8S.glob("*.yaml")}
    assert files - listed == examples, "manifests neither in kustomization.yaml nor examples"
    assert not (examples & listed), "the Secret examples must not be applied by default"
    kustomization_text = (K8S / "kustomization.yaml").read_text(encoding="utf-8")
    for directory in sorted(COMPONENTS.iterdir()):
        component = kustomization(directory)
        used = set(component["resources"]) | {p["path"] for p in component.get("patches", [])}
        assert {p.name for p in directory.glob("*.yaml")} == used | {"kustomization.yaml"}
        # enabled, or there to uncomment
        assert f"- components/{directory.name}\n" in kustomization_text, directory.name
    assert set(VARIANTS) >= {"base", "redis", "ingress"}
    assert kustomization(K8S)["components"] == ["components/postgres"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kustomization_renders(variant: str) -> None:
    docs = rendered(variant)
    found = sorted((d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] != "ConfigMap")
    expected = [
        ("Deployment", "chatkit-gateway"),
        ("HorizontalPodAutoscaler", "chatkit-gateway"),
        ("NetworkPolicy", "chatkit-gateway"),
        ("PodDisruptionBudget", "chatkit-gateway"),
        ("PrometheusRule", "chatkit-gateway"),
        ("Service", "chatkit-gateway"),
        ("ServiceAccount", "chatkit-gateway"),
        ("ServiceMonitor", "chatkit-gateway"),
        # components/postgres, enabled in the production kustomization
        ("NetworkPolicy", POSTGRES),
        ("Service", POSTGRES),
        ("StatefulSet", POSTGRES),
    ]
    if variant == "redis":
        expected += [
            ("Deployment", "chatkit-gateway-redis"),
            ("NetworkPolicy", "chatkit-gateway-redis"),
            ("Service", "chatkit-gateway-redis"),
        ]
    if variant == "ingress":
        expected += [("Ingress", "chatkit-gateway")]
    assert found == sorted(expected)
    (configmap,) = (d for d in docs if d["kind"] == "ConfigMap")
    assert re.fullmatch(r"chatkit-gateway-config-[0-9a-f]{10}", configmap["metadata"]["name"])
    assert not any("x-hash-suffix" in d or "namespace" in d["metadata"] for d in docs)


def _schema_cases() -> Iterator[tuple[str, str, str, str]]:
    for variant in sorted(VARIANTS):
        for doc in _built(variant):
            if not doc["apiVersion"].startswith(CRD_API_GROUPS):
                for version in K8S_VERSIONS:
                    yield variant, doc["kind"], doc["metadata"]["name"], version
    for example in EXAMPLES:
        for doc in load_docs(K8S / example):
            for version in K8S_VERSIONS:
                yield example, doc["kind"], doc["metadata"]["name"], version


@pytest.mark.parametrize(("variant", "kind", "name", "version"), sorted(set(_schema_cases())))
def test_manifest_matches_kubernetes_schema(
    variant: str, kind: str, name: str, version: str
) -> None:
    docs = load_docs(K8S / variant) if variant in EXAMPLES else rendered(variant)
    doc = one(docs, kind, name)
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        pytest.fail(f"{kind}/{name} against Kubernetes {version}: {path}: {exc.message}")


def test_only_known_crds_skip_schema_validation() -> None:
    docs = rendered("redis")
    crds = {
        (d["apiVersion"], d["kind"]) for d in docs if d["apiVersion"].startswith(CRD_API_GROUPS)
    }
    assert crds == {
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }


def _real_kustomize() -> list[str] | None:
    """`kustomize build` or `kubectl kustomize` when either is installed (v4+: components)."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        probe = subprocess.run(
            ["kubectl", "version", "--client"], capture_output=True, text=True, timeout=30
        )
        match = re.search(r"Kustomize Version: v(\d+)", probe.stdout)
        if match and int(match.group(1)) >= 4:
            return ["kubectl", "kustomize"]
    return None


def _comparable(docs: list[Manifest]) -> dict[tuple[str, str], Any]:
    """Objects by kind and name, the generated ConfigMap's name suffix blanked out."""
    text = yaml.safe_dump_all(docs, sort_keys=True)
    text = re.sub(r"(chatkit-gateway-config)-[a-z0-9]{10}\b", r"\1-HASH", text)
    return {(d["kind"], name_of(d)): d for d in yaml.safe_load_all(text) if d}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_real_kustomize_renders_the_same(variant: str, tmp_path: Path) -> None:
    command = _real_kustomize()
    if command is None:
        pytest.skip("neither kustomize nor kubectl (kustomize v4+) is installed")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    overlay_spec = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S, overlay)],
        "components": [os.path.relpath(c, overlay) for c in VARIANTS[variant]],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(overlay_spec))
    out = subprocess.run(
        [*command, str(overlay)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    real = [d for d in yaml.safe_load_all(out) if d]
    assert _comparable(real) == _comparable(rendered(variant))


# --------------------------------------------------------------------------- the gateway Pod


def test_deployment_runs_the_gateway() -> None:
    docs = rendered()
    deployment = gateway_deployment(docs)
    assert deployment["spec"]["replicas"] == 2
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(docs))
    container = gateway_container(docs)
    assert container["image"] == IMAGE
    argv = [*container["command"], *container["args"]]
    assert argv == ["chatkit-gateway", "serve", "--config", CONFIG_PATH]
    assert "--stub-upstream" not in container["args"]


def test_container_ports_are_the_policy_ports() -> None:
    docs = rendered()
    ports = gateway_container(docs)["ports"]
    assert [(p["name"], p["containerPort"]) for p in ports] == [("http", 8080), ("ops", OPS_PORT)]
    assert policy(docs)["server"]["port"] == 8080
    assert policy(docs)["server"]["ops_port"] == OPS_PORT


def test_behind_the_ingress_the_per_client_cap_is_the_listeners() -> None:
    """The TCP peers are the ingress controller's pods: a per-client cap below the
    listener's would refuse browsers by the ingress pod they came through."""
    server = policy(rendered())["server"]
    assert server["trusted_proxies"], "the manifests sit behind an ingress"
    total = server.get("max_connections", ServerConfig.max_connections)
    assert server["max_connections_per_client"] == total


def test_probes_hit_healthz_and_readyz_on_the_ops_port() -> None:
    """Not on the public port, where clients holding every connection would fail them."""
    container = gateway_container(rendered())
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        if probe == "startupProbe" and probe not in container:
            continue
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        port = ports.get(get["port"], get["port"])
        assert port == OPS_PORT, f"{probe} port {get['port']}"


WORKLOADS = (
    ("Deployment", "chatkit-gateway"),
    ("Deployment", "chatkit-gateway-redis"),
    ("StatefulSet", POSTGRES),
)


def test_pod_security_is_restricted() -> None:
    docs = rendered("redis")
    for kind, name in WORKLOADS:
        spec = one(docs, kind, name)["spec"]["template"]["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in sc["capabilities"], name
            assert not sc.get("privileged"), name
            assert sc.get("runAsUser", pod.get("runAsUser", 0)) != 0, name
    assert gateway_deployment(docs)["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == (
        RUN_AS_USER
    )


def test_tmp_is_writable_with_a_read_only_root() -> None:
    docs = rendered()
    volume = _volume_for(docs, "/tmp/x")
    assert "emptyDir" in volume
    assert volume["emptyDir"].get("sizeLimit"), "bound /tmp so a leak cannot fill the node"


def test_resources_have_requests_and_limits() -> None:
    docs = rendered("redis")
    for kind, name in WORKLOADS:
        for container in one(docs, kind, name)["spec"]["template"]["spec"]["containers"]:
            resources = container["resources"]
            assert set(resources["requests"]) == {"cpu", "memory"}, name
            assert "memory" in resources["limits"], name


def test_container_reads_the_generated_policy() -> None:
    docs = rendered()
    text = configmap_policy_text(docs)
    assert text == (K8S / "gateway.yaml").read_text(encoding="utf-8")
    assert _mount_for(gateway_container(docs), CONFIG_PATH)["readOnly"] is True


def test_policy_follows_spec_layout() -> None:
    data = policy(rendered())
    assert set(data) == {"server", "upstream", "limiter", "metrics", "routes"}
    assert data["upstream"]["api_key_file"] == API_KEY_FILE
    assert "api_key" not in data["upstream"], "the key comes from the Secret file only"
    assert data["limiter"]["backend"] == "memory"
    names = [r["name"] for r in data["routes"]]
    assert len(names) == len(set(names)) and {"ops", "unmatched"}.isdisjoint(names)


def test_policy_serves_an_agent_route_on_postgresql() -> None:
    """The production policy: ChatKit served by the gateway, threads in PostgreSQL; no
    hosted-workflow route (Agent Builder is gone) and no proxy without a backend."""
    data = policy(rendered())
    kinds = {r["name"]: r["kind"] for r in data["routes"]}
    assert kinds == {AGENT_ROUTE: "chatkit_agent"}, kinds
    route = agent_route(rendered())
    spec_keys = {"agent", "store", "attachments", "user_id", "rate_limits", "token_budgets"}
    assert spec_keys <= set(route), "SPEC §8's keys"
    assert route["max_streams_per_client"] >= 1
    assert route["user_id"]["source"] == "device_id"
    assert "url" not in route["store"], "the store URL (with its password) is a Secret file"
    assert route["store"]["url_file"].startswith("/run/secrets/")
    assert "secret" not in route["user_id"], "the user-id key is a Secret file"
    budgets = {b["key"] for b in route["token_budgets"]}
    assert {"user", "global"} <= budgets
    text = (K8S / "gateway.yaml").read_text(encoding="utf-8")
    assert "# - name: chat" in text and "kind: chatkit_proxy" in text, "the proxy, as an option"


def test_policy_keeps_the_sites_knowledge_in_postgresql_with_a_refresh() -> None:
    """SPEC §9 in production: the agent route searches the site's pages, indexed in the
    PostgreSQL store every replica shares, refreshed by serve (one replica at a time)."""
    route = agent_route(rendered())
    knowledge = route["knowledge"]
    assert knowledge["sources"] and all(
        str(next(iter(s.values()))).startswith("https://") for s in knowledge["sources"]
    )
    assert knowledge["refresh"]
    assert route["store"]["url_file"] == "/run/secrets/store/url"  # postgresql://, a Secret
    assert store_example()["url"].startswith("postgresql://")


def test_store_files_are_the_mounted_store_secret() -> None:
    docs = rendered()
    container = gateway_container(docs)
    route = agent_route(docs)
    example = store_example()
    pod = gateway_deployment(docs)["spec"]["template"]["spec"]
    for path in (route["store"]["url_file"], route["user_id"]["secret_file"]):
        volume = _volume_for(docs, path)
        assert "secret" in volume, f"{path} is not on a Secret volume"
        assert volume["secret"]["secretName"] == STORE_SECRET
        assert volume["secret"].get("optional") is not True
        assert _mount_for(container, path)["readOnly"] is True
        key = _key_in_volume(volume["secret"], _relative_to_mount(container, path))
        assert key in example, f"{STORE_SECRET} example has no key {key}"
        assert volume["secret"].get("defaultMode", 0o644) & 0o007 == 0
    assert pod["securityContext"]["fsGroup"] == RUN_AS_USER
    # The OpenAI Secret stays required: the agent route calls the model with it.
    openai = _volume_for(docs, API_KEY_FILE)["secret"]
    assert openai.get("optional") is not True


def test_secret_examples_hold_only_placeholders() -> None:
    for value in store_example().values():
        assert "REPLACE" in value, value
    url = urlsplit(store_example()["url"])
    assert url.password == store_example()["postgres-password"]


def test_api_key_file_is_the_mounted_secret() -> None:
    docs = rendered()
    container = gateway_container(docs)
    path = policy(docs)["upstream"]["api_key_file"]
    volume = _volume_for(docs, path)
    assert "secret" in volume, f"{path} is not on a Secret volume"
    assert _mount_for(container, path)["readOnly"] is True
    example = one(load_docs(K8S / "secret.example.yaml"), "Secret")
    assert volume["secret"]["secretName"] == example["metadata"]["name"]
    key = _key_in_volume(volume["secret"], _relative_to_mount(container, path))
    assert key in {**example.get("stringData", {}), **example.get("data", {})}
    # readable by the pod's group (fsGroup), not by others
    pod = gateway_deployment(docs)["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == RUN_AS_USER
    assert volume["secret"].get("defaultMode", 0o644) & 0o007 == 0


def test_secret_example_holds_only_a_placeholder() -> None:
    text = (K8S / "secret.example.yaml").read_text(encoding="utf-8")
    secret = one(load_docs(K8S / "secret.example.yaml"), "Secret")
    values = list(secret.get("stringData", {}).values()) + list(secret.get("data", {}).values())
    assert values, "the example shows which key to create"
    for value in values:
        assert "REPLACE" in value
        assert not re.search(r"sk-[A-Za-z0-9_-]{8,}", value)
    assert not re.search(r"\bsk-(proj-)?[A-Za-z0-9_-]{16,}", text)


def test_termination_grace_covers_prestop_and_drain() -> None:
    docs = rendered()
    spec = gateway_deployment(docs)["spec"]["template"]["spec"]
    sleep = prestop_sleep_seconds(gateway_container(docs))
    server = policy(docs)["server"]
    defaults = ServerConfig()
    grace = float(server.get("shutdown_grace_seconds", defaults.shutdown_grace_seconds))
    drain = float(server.get("drain_timeout_seconds", defaults.drain_timeout_seconds))
    assert 3 <= sleep <= 15, "preStop lets endpoint removal reach every node"
    # preStop, then serving through the grace, then in-flight work up to the drain timeout.
    assert spec["terminationGracePeriodSeconds"] >= sleep + grace + drain


def test_rolling_update_keeps_capacity() -> None:
    strategy = gateway_deployment(rendered())["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_every_policy_variable_is_set() -> None:
    for variant in VARIANTS:
        docs = rendered(variant)
        env = {e["name"] for e in gateway_container(docs).get("env", [])}
        needed = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", configmap_policy_text(docs)))
        assert needed <= env, f"{variant}: unset policy variables {needed - env}"
        assert "envFrom" not in gateway_container(docs) or all(
            "secretRef" not in s for s in gateway_container(docs)["envFrom"]
        )


def _gateway_check_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("gateway.__main__") is not None
    except ImportError:
        return False


def agent_route(docs: list[Manifest]) -> dict[str, Any]:
    routes = [r for r in policy(docs)["routes"] if r["name"] == AGENT_ROUTE]
    assert len(routes) == 1, f"no route {AGENT_ROUTE}"
    route = routes[0]
    assert isinstance(route, dict)
    return route


def store_example() -> dict[str, str]:
    secret = one(load_docs(K8S / "store-secret.example.yaml"), "Secret")
    assert secret["metadata"]["name"] == STORE_SECRET
    data = dict(secret["stringData"])
    return data


def secret_files(docs: list[Manifest]) -> dict[str, str]:
    """Every `*_file` path of the policy, each with a stand-in for its Secret's content."""
    route = agent_route(docs)
    return {
        policy(docs)["upstream"]["api_key_file"]: "placeholder-for-check",
        route["store"]["url_file"]: store_example()["url"],
        route["user_id"]["secret_file"]: "0123456789abcdef0123456789abcdef",
    }


def local_policy_text(docs: list[Manifest], tmp_path: Path, **files: str) -> str:
    """The ConfigMap's policy with each Secret file it reads written under tmp_path;
    `files` (by the file's name) replaces a stand-in."""
    text = configmap_policy_text(docs)
    for path, content in secret_files(docs).items():
        local = tmp_path / Path(path).name
        local.write_text(files.get(local.name, content) + "\n")
        assert text.count(path) == 1, path
        text = text.replace(path, str(local))
    return text


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_policy_passes_gateway_check(variant: str, tmp_path: Path) -> None:
    """Needs the `chatkit_agent` route kind: the production route is one."""
    if not _gateway_check_available():
        pytest.skip("`python -m gateway` is not there yet")
    docs = rendered(variant)
    text = local_policy_text(docs, tmp_path)
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIMITER_", "CHATKIT_"))}
    env.update({e["name"]: e["value"] for e in gateway_container(docs).get("env", [])})
    command = [sys.executable, "-m", "gateway", "check", "--config", str(config)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = "redis" if variant == "redis" else "memory"
    assert re.search(rf"backend:\s*{expected}\b", result.stdout), result.stdout


# --------------------------------------------------------------------------- other objects


def test_service_exposes_http_on_port_80_and_ops_for_the_servicemonitor() -> None:
    docs = rendered()
    service = one(docs, "Service", "chatkit-gateway")
    assert selects(service["spec"]["selector"], pod_labels(docs))
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", 80, "http"),
        ("ops", OPS_PORT, "ops"),
    ]


def test_hpa_scales_the_deployment_on_cpu() -> None:
    docs = rendered()
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        "apps/v1",
        "Deployment",
        "chatkit-gateway",
    )
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"] == [
        "cpu"
    ]
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]


def test_pdb_keeps_one_pod() -> None:
    docs = rendered()
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(docs))
    assert one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] > 1


def test_servicemonitor_scrapes_metrics_on_the_ops_port() -> None:
    docs = rendered()
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", "chatkit-gateway")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert "namespaceSelector" not in monitor["spec"] or monitor["spec"]["namespaceSelector"]
    (endpoint,) = monitor["spec"]["endpoints"]
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert endpoint["port"] == "ops"
    container_ports = {p["name"]: p["containerPort"] for p in gateway_container(docs)["ports"]}
    target = by_name[endpoint["port"]]["targetPort"]
    assert container_ports.get(target, target) == policy(docs)["server"]["ops_port"]
    assert endpoint["path"] == policy(docs)["metrics"]["path"] == "/metrics"
    for field in ("interval", "scrapeTimeout"):
        assert re.fullmatch(r"\d+[smh]", endpoint.get(field, "30s")), field
    known = {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings"}
    assert set(endpoint) <= known
    # The service name becomes the job label that the alert rules match.
    assert re.fullmatch(".*chatkit-gateway.*", service["metadata"]["name"])


def _policy_ports(rule: Mapping[str, Any]) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])}


def test_networkpolicy_allows_http_and_ops_in_and_dns_https_redis_out() -> None:
    docs = rendered()
    netpol = one(docs, "NetworkPolicy", "chatkit-gateway")
    assert selects(netpol["spec"]["podSelector"]["matchLabels"], pod_labels(docs))
    assert set(netpol["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ingress = set().union(*(_policy_ports(r) for r in netpol["spec"]["ingress"]))
    container_ports = {("TCP", p["containerPort"]) for p in gateway_container(docs)["ports"]}
    assert ingress == {("TCP", 8080), ("TCP", OPS_PORT)} == container_ports
    egress = set().union(*(_policy_ports(r) for r in netpol["spec"]["egress"]))
    assert {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6379), ("TCP", 5432)} <= egress
    redis_url = str(policy(docs)["limiter"]["redis_url"])
    assert ("TCP", int(re.sub(r".*:(\d+)/.*", r"\1", redis_url))) in egress
    assert ("TCP", urlsplit(store_example()["url"]).port) in egress


# --------------------------------------------------------------------------- Redis component


def test_redis_component_switches_the_limiter_to_redis() -> None:
    base, docs = rendered(), rendered("redis")
    assert policy(base)["limiter"]["backend"] == "memory"
    assert policy(docs)["limiter"]["backend"] == "redis"
    env = {e["name"]: e.get("value") for e in gateway_container(docs)["env"]}
    assert env["LIMITER_BACKEND"] == "redis"
    # the patch leaves the rest of the gateway container alone
    patched = gateway_container(docs)
    patched.pop("env")
    plain = gateway_container(base)
    plain.pop("env", None)
    assert patched == plain


def test_redis_url_points_at_the_redis_service() -> None:
    docs = rendered("redis")
    url = str(policy(docs)["limiter"]["redis_url"])
    match = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/\d+", url)
    assert match, url
    service = one(docs, "Service", match.group(1))
    (port,) = service["spec"]["ports"]
    assert port["port"] == int(match.group(2))
    assert selects(service["spec"]["selector"], pod_labels(docs, "chatkit-gateway-redis"))
    (container,) = one(docs, "Deployment", "chatkit-gateway-redis")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["image"] == "redis:7-alpine"
    assert port["targetPort"] in {p["name"] for p in container["ports"]} | {6379}
    assert _volume_mounts(container) == {"/data"}


def _volume_mounts(container: Mapping[str, Any]) -> set[str]:
    return {m["mountPath"] for m in container.get("volumeMounts", [])}


def test_redis_accepts_only_the_gateway() -> None:
    docs = rendered("redis")
    netpol = one(docs, "NetworkPolicy", "chatkit-gateway-redis")
    assert selects(
        netpol["spec"]["podSelector"]["matchLabels"], pod_labels(docs, "chatkit-gateway-redis")
    )
    (rule,) = netpol["spec"]["ingress"]
    (peer,) = rule["from"]
    assert selects(peer["podSelector"]["matchLabels"], pod_labels(docs))
    assert _policy_ports(rule) == {("TCP", 6379)}
    assert netpol["spec"]["egress"] == []


# --------------------------------------------------------------------------- PostgreSQL component


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def postgres_container(docs: list[Manifest]) -> dict[str, Any]:
    (container,) = one(docs, "StatefulSet", POSTGRES)["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_postgres_is_what_the_store_url_names() -> None:
    docs = rendered()
    url = urlsplit(store_example()["url"])
    assert url.scheme == "postgresql" and url.hostname and url.port
    service = one(docs, "Service", url.hostname)
    (port,) = service["spec"]["ports"]
    assert port["port"] == url.port
    statefulset = one(docs, "StatefulSet", POSTGRES)
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert selects(service["spec"]["selector"], pod_labels(docs, POSTGRES, "StatefulSet"))
    container = postgres_container(docs)
    assert container["image"] == "postgres:16-alpine"
    assert port["targetPort"] in {p["name"] for p in container["ports"]} | {url.port}
    env = _env(container)
    assert env["POSTGRES_USER"] == url.username
    assert env["POSTGRES_DB"] == url.path.lstrip("/")
    assert "POSTGRES_PASSWORD" not in env, "the password comes from the Secret file"


def _pod_volume(spec: Mapping[str, Any], container: Mapping[str, Any], path: str) -> Any:
    mount = _mount_for(container, path)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    claims = {c["metadata"]["name"]: c for c in spec.get("volumeClaimTemplates", [])}
    return mount, volumes.get(mount["name"]), claims.get(mount["name"])


def test_postgres_reads_its_password_from_the_store_secret() -> None:
    docs = rendered()
    statefulset = one(docs, "StatefulSet", POSTGRES)
    pod = statefulset["spec"]["template"]["spec"]
    container = postgres_container(docs)
    path = _env(container)["POSTGRES_PASSWORD_FILE"]
    mount, volume, _ = _pod_volume(pod, container, path)
    assert mount["readOnly"] is True
    secret = volume["secret"]
    assert secret["secretName"] == STORE_SECRET
    key = _key_in_volume(secret, path[len(mount["mountPath"].rstrip("/")) + 1 :])
    assert key == "postgres-password" and key in store_example()
    assert secret.get("defaultMode", 0o644) & 0o007 == 0
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]


def test_postgres_keeps_its_data_on_a_claim_and_writes_nowhere_else() -> None:
    docs = rendered()
    statefulset = one(docs, "StatefulSet", POSTGRES)
    spec = {**statefulset["spec"]["template"]["spec"], **statefulset["spec"]}
    container = postgres_container(docs)
    data = _env(container)["PGDATA"]
    mount, volume, claim = _pod_volume(spec, container, data + "/PG_VERSION")
    assert volume is None and claim is not None, "PGDATA is on the volumeClaimTemplate"
    assert data.rstrip("/") != mount["mountPath"].rstrip("/"), "below the mount (lost+found)"
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # A read-only root: the socket directory and /tmp are volumes of their own.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    for path in ("/var/run/postgresql/.s.PGSQL.5432", "/tmp/x"):
        _, writable, _ = _pod_volume(spec, container, path)
        assert writable is not None and "emptyDir" in writable, path
        assert writable["emptyDir"].get("sizeLimit"), path
    # SIGTERM is PostgreSQL's "smart" shutdown, which waits for the gateway's pooled
    # connections: preStop asks for a fast one within the grace period.
    command = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "pg_ctl stop" in command and "-m fast" in command
    seconds = int(re.search(r"-t (\d+)", command).group(1))  # type: ignore[union-attr]
    assert seconds < statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["exec"]["command"][0] == "pg_isready", probe


def test_postgres_accepts_only_the_gateway() -> None:
    docs = rendered()
    netpol = one(docs, "NetworkPolicy", POSTGRES)
    assert selects(
        netpol["spec"]["podSelector"]["matchLabels"], pod_labels(docs, POSTGRES, "StatefulSet")
    )
    (rule,) = netpol["spec"]["ingress"]
    (peer,) = rule["from"]
    assert selects(peer["podSelector"]["matchLabels"], pod_labels(docs))
    assert _policy_ports(rule) == {("TCP", urlsplit(store_example()["url"]).port)}
    assert netpol["spec"]["egress"] == []


# --------------------------------------------------------------------------- Ingress component


def _nginx_size(value: str) -> int:
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert match, value
    return (
        int(match.group(1))
        * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    )


def test_ingress_lets_uploads_and_long_streams_through() -> None:
    """ingress-nginx's defaults (1 MiB bodies, 60 s reads, buffering) would break both."""
    docs = rendered("ingress")
    ingress = one(docs, "Ingress", "chatkit-gateway")
    notes = {
        k.removeprefix("nginx.ingress.kubernetes.io/"): v
        for k, v in ingress["metadata"]["annotations"].items()
    }
    route = agent_route(docs)
    assert _nginx_size(notes["proxy-body-size"]) > route["attachments"]["max_bytes"]
    idle = max(
        [300.0] + [float(r.get("stream_idle_timeout_seconds", 0)) for r in policy(docs)["routes"]]
    )
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[timeout]) > idle, timeout
    assert notes["proxy-buffering"] == "off"
    assert notes["proxy-request-buffering"] == "off"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    service = one(docs, "Service", "chatkit-gateway")
    http = next(p for p in service["spec"]["ports"] if p["name"] == "http")
    hosts = set()
    for rule in ingress["spec"]["rules"]:
        hosts.add(rule["host"])
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"] in ({"name": "http"}, {"number": http["port"]})
    for tls in ingress["spec"].get("tls", []):
        assert set(tls["hosts"]) <= hosts


# --------------------------------------------------------------------------- PrometheusRule


def test_prometheusrule_is_the_rules_file_with_the_servicemonitors_label(tmp_path: Path) -> None:
    docs = rendered()
    rule = one(docs, "PrometheusRule", "chatkit-gateway")
    monitor = one(docs, "ServiceMonitor", "chatkit-gateway")
    assert rule["spec"] == load_rules(), "prometheusrule.yaml is stale: regenerate it"
    release = monitor["metadata"]["labels"].get("release")
    assert release, "the ServiceMonitor carries the operator's release label"
    assert rule["metadata"]["labels"]["release"] == release
    # The regeneration command of rules.yml's header reproduces the file byte for byte.
    (command,) = [
        line.removeprefix("#").strip()
        for line in RULES_FILE.read_text(encoding="utf-8").splitlines()
        if "prometheusrule.yaml.new" in line
    ]
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shipped = (K8S / "prometheusrule.yaml").read_text(encoding="utf-8")
    subprocess.run(["bash", "-c", f"set -eo pipefail; {command}"], cwd=tmp_path, check=True)
    assert (tmp_path / "config/kubernetes/prometheusrule.yaml").read_text() == shipped


# --------------------------------------------------------------------------- the README's steps


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is missing under CI (the machine image ships it)")
        pytest.skip("kubectl is not installed (the cluster-free parts need only its client)")
    return found


def test_readme_image_is_the_one_the_kustomization_deploys() -> None:
    """The image the README builds and pushes is the one the Deployment runs."""
    # The Kubernetes section's build-and-push (the VPS section builds a local image too).
    (build,) = [
        c for c in all_commands() if c.key.startswith("docker build ") and "docker push" in c.key
    ]
    words = build.text.split()
    tag = words[words.index("-t") + 1]
    assert words[words.index("-t") + 2] == ".", "built from the repository's root"
    assert (ROOT / "Dockerfile").is_file()
    assert re.search(rf"docker push {re.escape(tag)}(\s|$)", build.key), build.key
    assert gateway_container(rendered())["image"] == tag
    # and named in one place: the images: entry, over deployment.yaml's bare name
    raw = one(load_docs(K8S / "deployment.yaml"), "Deployment")
    (container,) = raw["spec"]["template"]["spec"]["containers"]
    (entry,) = kustomization(K8S)["images"]
    assert split_image(container["image"])[0] == entry["name"]
    assert "/" not in entry["name"], "deployment.yaml names no registry of its own"


def test_readme_store_secret_matches_the_manifests(tmp_path: Path) -> None:
    """The README's two lines, with --dry-run: the Secret both pods read, consistent."""
    kubectl = _kubectl()
    (assign,) = [c for c in all_commands() if c.key.startswith("POSTGRES_PASSWORD=")]
    (create,) = [c for c in all_commands() if f"secret generic {STORE_SECRET}" in c.key]
    script = f"set -eu\n{assign.text}\n{create.text} --dry-run=client -o yaml"
    path = f"{Path(kubectl).parent}:{os.environ.get('PATH', '')}"
    out = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base_env(), "PATH": path},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    secret = yaml.safe_load(out.stdout)
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    docs = rendered()
    assert secret["metadata"] == {"name": STORE_SECRET, "namespace": "chatkit"} | {
        k: v for k, v in secret["metadata"].items() if k not in ("name", "namespace")
    }
    assert set(data) == set(store_example()), "the keys of store-secret.example.yaml"
    # every key a pod mounts is there
    gateway_items = {
        i["key"]
        for v in gateway_deployment(docs)["spec"]["template"]["spec"]["volumes"]
        if v.get("secret", {}).get("secretName") == STORE_SECRET
        for i in v["secret"]["items"]
    }
    postgres_items = {
        i["key"]
        for v in one(docs, "StatefulSet", POSTGRES)["spec"]["template"]["spec"]["volumes"]
        if v.get("secret", {}).get("secretName") == STORE_SECRET
        for i in v["secret"]["items"]
    }
    assert gateway_items | postgres_items == set(data)
    url = urlsplit(data["url"])
    example = urlsplit(store_example()["url"])
    assert (url.scheme, url.username, url.hostname, url.port, url.path) == (
        example.scheme,
        example.username,
        example.hostname,
        example.port,
        example.path,
    )
    assert url.password == data["postgres-password"]
    assert re.fullmatch(r"[0-9a-f]{48}", data["postgres-password"])
    assert re.fullmatch(r"[0-9a-f]{64}", data["user-id-secret"])


@pytest.mark.slow
async def test_readme_chat_through_the_production_policy(tmp_path: Path) -> None:
    """The README's chat `curl`, against the production policy as the pods read it, served
    with --stub-upstream and the store on SQLite instead of the cluster's PostgreSQL (the
    port-forward replaced by the gateway's own ports). Needs the `chatkit_agent` kind."""
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is missing under CI")
        pytest.skip("curl is not installed")
    (curl,) = [c for c in all_commands() if c.key.startswith("curl -sN localhost:8080/chatkit/")]
    docs = rendered()
    gw, ops = free_port(), free_port()
    text = local_policy_text(docs, tmp_path, url=f"sqlite:///{tmp_path}/threads.db")
    data = yaml.safe_load(text)
    data["server"].update(host="127.0.0.1", port=gw, ops_port=ops, shutdown_grace_seconds=0)
    data["limiter"]["backend"] = "memory"
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    gateways: list[Gateway] = []
    try:
        gateway = await start_gateway(
            config, ops, "--stub-upstream", env=base_env(), gateways=gateways
        )

        async def ready() -> bool:  # the store is open
            async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/readyz") as r:
                return r.status == 200

        await poll(ready, 30, f"/readyz 200:\n{gateway.stdout}")
        local = curl.text.replace("localhost:8080", f"localhost:{gw}")
        assert local != curl.text, curl.text
        done = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-c", f"set -o pipefail; {local}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{curl.source}: {local}\n{done.stdout}{done.stderr}"
        events = [
            json.loads(line[6:]) for line in done.stdout.splitlines() if line.startswith("data: ")
        ]
        assert events and events[0]["type"] == "thread.created", done.stdout
        assert not [e for e in events if e["type"] == "error"], done.stdout
        answers = [
            e
            for e in events
            if e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"
        ]
        assert answers, done.stdout
    finally:
        for running in gateways:
            await running.kill()
