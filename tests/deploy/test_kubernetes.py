"""deploy/k8s: rendered offline with `kubectl kustomize`, every resource validated against
the Kubernetes API schemas bundled in kubernetes-validate (strict: unknown fields fail),
and the properties a production deployment relies on asserted on the rendered output."""

from __future__ import annotations

import copy
import functools
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # no py.typed marker
import pytest
import yaml

from tests.deploy.support import (
    DEFAULT_EMBEDDINGS,
    K8S,
    KNOWLEDGE_DIR,
    NON_SETTINGS_ENV,
    TEI_IMAGE,
    TEI_LANGUAGES,
    TEI_MODEL,
    TEI_MODEL_DIMENSION,
    load_yaml,
    run,
    settings_env_names,
    tool,
)

# An older release, so the manifests use no API or field newer than 1.30 (clusters lag),
# and the newest release whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Custom resources have no schema in kubernetes-validate (it bundles the core API only):
# KEDA's ScaledObject is checked by the assertions of test_keda_scales_workers_on_the_queue.
CUSTOM_RESOURCES = {("keda.sh/v1alpha1", "ScaledObject")}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}

# What is rendered: name -> (kustomization directory, components added on top of it).
VARIANTS = {
    "base": ("base", ()),
    "example": ("overlays/example", ()),
    "example+hpa-cpu+external-redis": (
        "overlays/example",
        ("components/hpa-cpu", "components/external-redis"),
    ),
    "example+pgvector": ("overlays/example", ("components/pgvector",)),
    "example+tei": ("overlays/example", ("components/tei",)),
}
TEI_COMPONENT = K8S / "components" / "tei"
Resources = list[dict[str, Any]]


@functools.cache
def _render(variant: str) -> tuple[str, ...]:
    directory, components = VARIANTS[variant]
    kubectl = tool("kubectl")
    if not components:
        out = run([kubectl, "kustomize", str(K8S / directory)])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rel = Path(os.path.relpath(K8S, tmp))
            (Path(tmp) / "kustomization.yaml").write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "kustomize.config.k8s.io/v1beta1",
                        "kind": "Kustomization",
                        "resources": [str(rel / directory)],
                        "components": [str(rel / c) for c in components],
                    }
                )
            )
            out = run([kubectl, "kustomize", tmp])
    return tuple(yaml.safe_dump(doc) for doc in yaml.safe_load_all(out) if doc)


def render(variant: str) -> Resources:
    return [yaml.safe_load(doc) for doc in _render(variant)]


def find(resources: Resources, kind: str, name: str) -> dict[str, Any]:
    for resource in resources:
        if resource["kind"] == kind and resource["metadata"]["name"] == name:
            return resource
    raise AssertionError(f"no {kind}/{name} in the rendered output")


def workloads(resources: Resources) -> Resources:
    return [r for r in resources if r["kind"] in WORKLOADS]


def pod_specs(resources: Resources) -> list[tuple[str, dict[str, Any]]]:
    return [(r["metadata"]["name"], r["spec"]["template"]["spec"]) for r in workloads(resources)]


def container(resources: Resources, kind: str, name: str) -> dict[str, Any]:
    spec = find(resources, kind, name)["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = spec["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture(params=list(VARIANTS))
def rendered(request: pytest.FixtureRequest) -> Resources:
    return render(str(request.param))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_matches_the_kubernetes_schema(rendered: Resources, version: str) -> None:
    checked = 0
    for resource in rendered:
        if (resource["apiVersion"], resource["kind"]) in CUSTOM_RESOURCES:
            continue
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            name = f"{resource['kind']}/{resource['metadata']['name']}"
            pytest.fail(f"{name} is invalid for Kubernetes {version} at {where}: {exc.message}")
        checked += 1
    assert checked >= 15


def test_the_validator_rejects_what_kubernetes_would() -> None:
    """Strict validation is not vacuous: a misspelt field and a wrong type both fail."""
    deployment = find(render("example"), "Deployment", "parley-bot")
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    for bad in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[0], strict=True)


def test_every_pod_is_locked_down(rendered: Resources) -> None:
    specs = pod_specs(rendered)
    # parley-tei only with components/tei; every pod rendered is checked below.
    assert {name for name, _ in specs} >= {"parley-bot", "parley-worker", "parley-tgi"}
    for name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] != 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        # Service links would inject PARLEY_REDIS_PORT=tcp://... and the like.
        assert spec["enableServiceLinks"] is False, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp, f"{where}: /tmp is a volume"
            assert "emptyDir" in volumes[tmp[0]["name"]], f"{where}: /tmp is an emptyDir"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where} {kind}"
            assert "livenessProbe" in c, where
            assert "readinessProbe" in c, where


def test_bot_probes_health_and_readiness_and_only_webhooks_are_public() -> None:
    resources = render("example")
    bot = container(resources, "Deployment", "parley-bot")
    assert bot["args"] == ["serve"]
    assert bot["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert bot["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in bot["ports"]}
    assert ports["http"] == 3000
    service = find(resources, "Service", "parley-bot")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    ingress = find(resources, "Ingress", "parley")
    paths = {
        p["path"]: p["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert paths == {"/slack/events": "parley-bot", "/api/messages": "parley-bot"}
    assert ingress["spec"]["tls"], "Slack and Teams call HTTPS only"


def test_settings_come_from_the_configmap_and_the_secret() -> None:
    resources = render("example")
    config = next(r for r in resources if r["kind"] == "ConfigMap")
    known = settings_env_names() | NON_SETTINGS_ENV
    assert set(config["data"]) <= known, set(config["data"]) - known
    secret = find(resources, "Secret", "parley-secrets")
    assert set(secret["stringData"]) <= known
    assert "PARLEY_ENCRYPTION_KEY" in secret["stringData"]
    for name in ("parley-bot", "parley-worker"):
        sources = container(resources, "Deployment", name)["envFrom"]
        # The Secret comes last so it can override the ConfigMap (e.g. PARLEY_REDIS_URL).
        assert sources[0]["configMapRef"]["name"] == config["metadata"]["name"]
        assert sources[-1]["secretRef"]["name"] == "parley-secrets"
    worker = container(resources, "Deployment", "parley-worker")
    port = next(p for p in worker["ports"] if p["name"] == "metrics")["containerPort"]
    assert str(port) == config["data"]["PARLEY_METRICS_PORT"]


def test_example_secrets_hold_placeholders_only() -> None:
    for resource in render("example"):
        if resource["kind"] != "Secret":
            continue
        assert "data" not in resource, "example Secrets use readable stringData placeholders"
        for key, value in resource["stringData"].items():
            assert "REPLACE_ME" in value, f"{resource['metadata']['name']}.{key}"


def test_tgi_has_a_gpu_weights_volume_and_agrees_with_parley() -> None:
    resources = render("example")
    tgi = container(resources, "Deployment", "parley-tgi")
    assert tgi["image"].startswith("ghcr.io/huggingface/text-generation-inference:")
    assert not tgi["image"].endswith(":latest")
    for kind in ("requests", "limits"):
        assert tgi["resources"][kind]["nvidia.com/gpu"] == "1"
    flags = dict(a[2:].split("=", 1) for a in tgi["args"] if a.startswith("--") and "=" in a)
    assert flags["model-id"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    spec = find(resources, "Deployment", "parley-tgi")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in tgi["volumeMounts"]}
    claim = volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
    find(resources, "PersistentVolumeClaim", claim)
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    secret_ref = next(e for e in tgi["env"] if e["name"] == "HF_TOKEN")["valueFrom"]
    find(resources, "Secret", secret_ref["secretKeyRef"]["name"])

    config = next(r for r in resources if r["kind"] == "ConfigMap")["data"]
    context, max_new = int(config["PARLEY_CONTEXT_TOKENS"]), int(config["PARLEY_MAX_NEW_TOKENS"])
    assert int(flags["max-total-tokens"]) == context
    assert context - max_new <= int(flags["max-input-tokens"]) < context
    service = find(resources, "Service", "parley-tgi")
    assert config["TGI_URL"] == f"http://parley-tgi:{service['spec']['ports'][0]['port']}"
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert int(flags["port"]) == tgi["ports"][0]["containerPort"]


def test_redis_statefulset_never_evicts_and_persists() -> None:
    resources = render("example")
    redis = container(resources, "StatefulSet", "parley-redis")
    args = [str(a) for a in redis["args"]]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--appendonly") + 1] == "yes"
    statefulset = find(resources, "StatefulSet", "parley-redis")
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    config = next(r for r in resources if r["kind"] == "ConfigMap")["data"]
    assert config["PARLEY_REDIS_URL"] == "redis://parley-redis:6379/0"
    find(resources, "Service", "parley-redis")


def test_keda_scales_workers_on_the_queue() -> None:
    resources = render("example")
    scaled = find(resources, "ScaledObject", "parley-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "parley-worker"
    find(resources, "Deployment", "parley-worker")
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis"  # KEDA's redis-lists scaler
    config = next(r for r in resources if r["kind"] == "ConfigMap")["data"]
    meta = trigger["metadata"]
    assert meta["listName"] == config["PARLEY_QUEUE"]
    assert int(meta["listLength"]) >= 1
    # The KEDA operator resolves the address from its own namespace: it must be fully
    # qualified with the namespace the overlay deploys into, and the broker's database.
    namespace = scaled["metadata"]["namespace"]
    assert meta["address"] == f"parley-redis.{namespace}.svc.cluster.local:6379"
    assert config["PARLEY_REDIS_URL"].endswith(f"/{meta['databaseIndex']}")
    assert not [r for r in resources if r["kind"] == "HorizontalPodAutoscaler"]


def test_hpa_component_replaces_keda_with_cpu_scaling() -> None:
    resources = render("example+hpa-cpu+external-redis")
    assert not [r for r in resources if r["kind"] == "ScaledObject"]
    hpa = find(resources, "HorizontalPodAutoscaler", "parley-worker")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "parley-worker",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


def test_external_redis_component_removes_the_in_cluster_redis() -> None:
    resources = render("example+hpa-cpu+external-redis")
    assert not [r for r in resources if r["metadata"]["name"] == "parley-redis"]
    policy = find(resources, "NetworkPolicy", "parley-app")
    redis_rule = policy["spec"]["egress"][0]
    assert "ipBlock" in redis_rule["to"][0]
    assert {p["port"] for p in redis_rule["ports"]} >= {6379}


def _ports(rule: dict[str, Any]) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), int(p["port"])) for p in rule["ports"]}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _pod_labels(resources: Resources, name: str) -> dict[str, str]:
    labels: dict[str, str] = find(resources, "Deployment", name)["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


def _http_port(resources: Resources, name: str) -> int:
    port: int = container(resources, "Deployment", name)["ports"][0]["containerPort"]
    return port


def test_network_policy_lets_parley_reach_only_redis_tgi_tei_dns_and_https(
    rendered: Resources,
) -> None:
    """Every egress rule of every policy selecting the bot or the workers, classified: the
    bot reaches Redis, TGI, DNS and public HTTPS; workers also TEI, only with the tei
    component; both PostgreSQL only with the pgvector component. Nothing else."""
    policies = [r for r in rendered if r["kind"] == "NetworkPolicy"]
    app = next(p for p in policies if p["metadata"]["name"] == "parley-app")
    pods = {name: _pod_labels(rendered, name) for name in ("parley-bot", "parley-worker")}
    for labels in pods.values():
        assert _selects(app["spec"]["podSelector"], labels)
    assert set(app["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    tgi_labels, tgi_port = _pod_labels(rendered, "parley-tgi"), _http_port(rendered, "parley-tgi")
    tei = any(_is_tei(r) for r in workloads(rendered))
    # Without TEI, a rule for the port TEI would use (or any other) is classified below as
    # unexpected.
    tei_labels, tei_port = (
        (_pod_labels(rendered, "parley-tei"), _http_port(rendered, "parley-tei"))
        if tei
        else ({}, -1)
    )
    assert tgi_port != tei_port, "a port tells TGI's rule from TEI's"
    pgvector = any(p["metadata"]["name"] == "parley-postgresql" for p in policies)

    reached: dict[str, set[str]] = {}
    for pod, labels in pods.items():
        reach: set[str] = set()
        for policy in policies:
            spec = policy["spec"]
            if "Egress" not in spec["policyTypes"] or not _selects(spec["podSelector"], labels):
                continue
            for rule in spec.get("egress", []):
                ports = _ports(rule)
                for peer in rule["to"]:
                    if "ipBlock" in peer and ports == {("TCP", 443)}:
                        # HTTPS to the chat platforms: public addresses only.
                        assert peer["ipBlock"]["cidr"] == "0.0.0.0/0"
                        assert {"10.0.0.0/8", "169.254.0.0/16"} <= set(peer["ipBlock"]["except"])
                        reach.add("https")
                    elif ports == {("UDP", 53), ("TCP", 53)}:
                        assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
                        reach.add("dns")
                    # NetworkPolicy ports are the pods' ports (after the Service's translation).
                    elif ports == {("TCP", tgi_port)}:
                        assert _selects(peer["podSelector"], tgi_labels), rule
                        reach.add("tgi")
                    elif ports == {("TCP", tei_port)}:
                        assert _selects(peer["podSelector"], tei_labels), rule
                        reach.add("tei")
                    elif ports == {("TCP", 5432)}:
                        assert "ipBlock" in peer, "PostgreSQL runs outside the namespace"
                        reach.add("postgresql")
                    else:
                        assert {p for _, p in ports} <= {6379, 6380}, f"unexpected egress {rule}"
                        reach.add("redis")
        reached[pod] = reach
    common = {"redis", "tgi", "dns", "https"} | ({"postgresql"} if pgvector else set())
    assert reached["parley-bot"] == common, "the bot never embeds: no TEI"
    assert reached["parley-worker"] == common | ({"tei"} if tei else set())

    # Every pod of the deployment is covered by a policy restricting its ingress.
    for workload in workloads(rendered):
        name = workload["metadata"]["name"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert any(
            "Ingress" in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels)
            for p in policies
        ), f"{name} accepts traffic from anywhere"


def test_overlay_sets_namespace_image_and_restricted_pod_security() -> None:
    resources = render("example")
    namespace = find(resources, "Namespace", "parley")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == "parley"
    for name in ("parley-bot", "parley-worker"):
        image = container(resources, "Deployment", name)["image"]
        assert re.fullmatch(r"[\w.-]+/[\w./-]+:[\w.-]+", image), image


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)


def _is_tei(resource: dict[str, Any]) -> bool:
    labels = resource["metadata"].get("labels", {})
    return bool(labels.get("app.kubernetes.io/component") == "tei")


@pytest.mark.parametrize("variant", [v for v in VARIANTS if "components/tei" not in VARIANTS[v][1]])
def test_workers_embed_in_process_without_the_tei_component(variant: str) -> None:
    """The base runs no TEI: the workers embed with the packaged multilingual model, no
    TEI resource is rendered and no policy lets anything reach TEI's port."""
    resources = render(variant)
    config = next(r for r in resources if r["kind"] == "ConfigMap")["data"]
    assert config["PARLEY_EMBEDDINGS"] == DEFAULT_EMBEDDINGS
    assert not [key for key in config if key.startswith("PARLEY_TEI_")]
    # The packaged model declares its own languages.
    assert "PARLEY_EMBEDDINGS_LANGUAGES" not in config
    assert not [r for r in resources if _is_tei(r) or "tei" in r["metadata"]["name"]]
    tei_port = _tei_container_port()
    for policy in (r for r in resources if r["kind"] == "NetworkPolicy"):
        for rule in policy["spec"].get("egress", []) + policy["spec"].get("ingress", []):
            assert ("TCP", tei_port) not in _ports(rule), policy["metadata"]["name"]


def test_tei_component_serves_a_multilingual_model_to_the_workers_only() -> None:
    resources = render("example+tei")
    tei = container(resources, "Deployment", "parley-tei")
    image, _, tag = tei["image"].rpartition(":")
    assert image == TEI_IMAGE
    assert re.fullmatch(r"cpu-\d+\.\d+(\.\d+)?", tag), "the CPU build, pinned"
    assert "nvidia.com/gpu" not in tei["resources"]["limits"], "the GPU stays TGI's"
    flags = _flags(tei["args"])
    assert flags["model-id"] == TEI_MODEL
    assert flags["hostname"] == "0.0.0.0", "not $HOSTNAME, which Kubernetes sets"
    assert int(flags["port"]) == tei["ports"][0]["containerPort"] > 1024
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert tei[probe]["httpGet"]["path"] == "/health", probe
    spec = find(resources, "Deployment", "parley-tei")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in tei["volumeMounts"]}
    claim = volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"]
    find(resources, "PersistentVolumeClaim", claim)

    # The component's merge points the workers at it, and keeps the rest of the ConfigMap.
    (config_map,) = [r for r in resources if r["kind"] == "ConfigMap"]
    config = config_map["data"]
    known = settings_env_names() | NON_SETTINGS_ENV
    assert set(config) <= known, set(config) - known
    for name in ("parley-bot", "parley-worker"):
        sources = container(resources, "Deployment", name)["envFrom"]
        assert sources[0]["configMapRef"]["name"] == config_map["metadata"]["name"]
    service = find(resources, "Service", "parley-tei")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert config["PARLEY_EMBEDDINGS"] == "tei"
    assert config["PARLEY_TEI_URL"] == f"http://parley-tei:{service['spec']['ports'][0]['port']}"
    assert int(config["PARLEY_TEI_DIMENSION"]) == TEI_MODEL_DIMENSION
    assert config["PARLEY_EMBEDDINGS_LANGUAGES"] == TEI_LANGUAGES
    assert config["PARLEY_KNOWLEDGE_STORE"] == "faiss"
    assert config["TGI_URL"] == "http://parley-tgi:80"

    # Only the workers may call it.
    policy = find(resources, "NetworkPolicy", "parley-tei")
    assert _selects(policy["spec"]["podSelector"], _pod_labels(resources, "parley-tei"))
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    (rule,) = policy["spec"]["ingress"]
    assert _ports(rule) == {("TCP", int(flags["port"]))}
    (peer,) = rule["from"]
    assert _selects(peer["podSelector"], _pod_labels(resources, "parley-worker"))
    assert not _selects(peer["podSelector"], _pod_labels(resources, "parley-bot"))
    assert "namespaceSelector" not in peer


# The same properties read from the files, for machines without kubectl.


def _documents(path: Path) -> Resources:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _tei_container_port() -> int:
    (deployment,) = [d for d in _documents(TEI_COMPONENT / "tei.yaml") if d["kind"] == "Deployment"]
    port: int = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    return port


def _literals(generator: dict[str, Any]) -> dict[str, str]:
    return dict(str(item).split("=", 1) for item in generator["literals"])


def test_base_files_embed_in_process_and_know_nothing_of_tei() -> None:
    kustomization = load_yaml(K8S / "base" / "kustomization.yaml")
    (generator,) = kustomization["configMapGenerator"]
    literals = _literals(generator)
    assert literals["PARLEY_EMBEDDINGS"] == DEFAULT_EMBEDDINGS
    assert not [key for key in literals if key.startswith("PARLEY_TEI_")]
    assert "tei.yaml" not in kustomization["resources"]
    assert not (K8S / "base" / "tei.yaml").exists()
    tei_port = _tei_container_port()
    for path in sorted((K8S / "base").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in _documents(path):
            assert not _is_tei(doc), f"{path.name}: {doc['metadata']['name']}"
            assert "component: tei" not in yaml.safe_dump(doc), f"{path.name} selects TEI"
            if doc["kind"] == "NetworkPolicy":
                for rule in doc["spec"].get("egress", []) + doc["spec"].get("ingress", []):
                    assert ("TCP", tei_port) not in _ports(rule), doc["metadata"]["name"]
    # Where operators look for the optional parts.
    overlay = (K8S / "overlays" / "example" / "kustomization.yaml").read_text()
    assert "#   - ../../components/tei" in overlay
    assert "../components/tei" in (K8S / "base" / "kustomization.yaml").read_text()


def test_tei_component_files_add_tei_and_point_the_workers_at_it() -> None:
    component = load_yaml(TEI_COMPONENT / "kustomization.yaml")
    assert component["kind"] == "Component"
    assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    for resource in component["resources"]:
        assert (TEI_COMPONENT / resource).is_file(), resource
    (generator,) = component["configMapGenerator"]
    assert generator["name"] == "parley-config"
    assert generator["behavior"] == "merge", "the base's other settings stay"
    literals = _literals(generator)
    known = settings_env_names()
    assert set(literals) <= known, set(literals) - known

    docs = _documents(TEI_COMPONENT / "tei.yaml")
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "PersistentVolumeClaim"}
    assert all(_is_tei(d) for d in docs)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (tei,) = deployment["spec"]["template"]["spec"]["containers"]
    assert _flags(tei["args"])["model-id"] == TEI_MODEL
    (service,) = [d for d in docs if d["kind"] == "Service"]
    assert literals == {
        "PARLEY_EMBEDDINGS": "tei",
        "PARLEY_TEI_URL": f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}",
        "PARLEY_TEI_DIMENSION": str(TEI_MODEL_DIMENSION),
        "PARLEY_EMBEDDINGS_LANGUAGES": TEI_LANGUAGES,
    }

    # Workers may reach TEI's container port, and TEI admits only workers there.
    port = _tei_container_port()
    worker = {"app.kubernetes.io/name": "parley", "app.kubernetes.io/component": "worker"}
    bot = {**worker, "app.kubernetes.io/component": "bot"}
    tei_labels = deployment["spec"]["template"]["metadata"]["labels"]
    policies = {d["metadata"]["name"]: d for d in _documents(TEI_COMPONENT / "networkpolicy.yaml")}
    egress = [
        rule
        for policy in policies.values()
        if "Egress" in policy["spec"]["policyTypes"]
        and _selects(policy["spec"]["podSelector"], worker)
        for rule in policy["spec"].get("egress", [])
        if _ports(rule) == {("TCP", port)}
    ]
    assert egress, "no egress rule lets the workers reach TEI"
    for rule in egress:
        assert all(_selects(peer["podSelector"], tei_labels) for peer in rule["to"])
    inbound = next(p for p in policies.values() if _selects(p["spec"]["podSelector"], tei_labels))
    (rule,) = inbound["spec"]["ingress"]
    assert _ports(rule) == {("TCP", port)}
    (peer,) = rule["from"]
    assert _selects(peer["podSelector"], worker)
    assert not _selects(peer["podSelector"], bot)


def test_workers_have_room_for_the_in_process_embedding_model() -> None:
    """Workers hold the multilingual model (and a `parley ingest` run in their pod loads
    another copy): worker.yaml's comment gives the measured figures these floors rest on."""
    (deployment,) = _documents(K8S / "base" / "worker.yaml")
    (worker,) = deployment["spec"]["template"]["spec"]["containers"]
    resources = worker["resources"]
    assert _mebibytes(resources["requests"]["memory"]) >= 1024
    assert _mebibytes(resources["limits"]["memory"]) >= 2048


def _mebibytes(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    raise AssertionError(f"unexpected memory quantity {quantity!r}")


def _knowledge_mount(resources: Resources, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = find(resources, "Deployment", name)["spec"]["template"]["spec"]
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == KNOWLEDGE_DIR]
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    return mount, volume


def test_faiss_knowledge_bases_are_on_a_volume_shared_by_workers_and_bot() -> None:
    resources = render("example")
    config = next(r for r in resources if r["kind"] == "ConfigMap")["data"]
    assert config["PARLEY_KNOWLEDGE_STORE"] == "faiss"
    assert config["PARLEY_KNOWLEDGE_DIR"] == KNOWLEDGE_DIR
    claims = set()
    for name, read_only in (("parley-worker", False), ("parley-bot", True)):
        mount, volume = _knowledge_mount(resources, name)
        assert mount.get("readOnly", False) is read_only, name
        claims.add(volume["persistentVolumeClaim"]["claimName"])
    (claim,) = claims
    pvc = find(resources, "PersistentVolumeClaim", claim)
    # Workers on several nodes mount it at once.
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_pgvector_component_replaces_the_shared_volume_with_postgresql() -> None:
    resources = render("example+pgvector")
    config = next(r for r in resources if r["kind"] == "ConfigMap")["data"]
    assert config["PARLEY_KNOWLEDGE_STORE"] == "pgvector"
    assert not [r for r in resources if r["metadata"]["name"] == "parley-knowledge"]
    for name in ("parley-worker", "parley-bot"):
        spec = find(resources, "Deployment", name)["spec"]["template"]["spec"]
        mounts = [m["mountPath"] for m in spec["containers"][0]["volumeMounts"]]
        assert KNOWLEDGE_DIR not in mounts, name
        claims = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
        assert not claims, name
    policy = find(resources, "NetworkPolicy", "parley-postgresql")
    for name in ("parley-worker", "parley-bot"):
        assert _selects(policy["spec"]["podSelector"], _pod_labels(resources, name)), name
    (rule,) = policy["spec"]["egress"]
    assert _ports(rule) == {("TCP", 5432)}
    # The URL holds a password: the Secret, never the ConfigMap.
    assert "PARLEY_KNOWLEDGE_DATABASE_URL" not in config
    example = (K8S / "overlays" / "example" / "secret.example.yaml").read_text()
    assert "# PARLEY_KNOWLEDGE_DATABASE_URL: postgresql://" in example
