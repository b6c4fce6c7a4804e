"""The Helm chart (charts/): lint, render, Kubernetes schema validation, values schema, security
defaults, and k8s/ in sync. Rendering uses Helm's own engine through helm-python-sdk (no binary,
no cluster, no network); `lookup` returns nothing offline, so generated Secrets are fresh."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (tests extra)")
kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts"
KUBE_VERSIONS = ["1.29.0", "1.33.0"]
# Objects whose schema kubernetes-validate does not ship (CRDs). The RayService's pod templates
# are validated as Pods in tests/chart/test_ray.py.
CRD_KINDS = {"ServiceMonitor", "RayService", "ScaledObject", "TriggerAuthentication"}

ALL_ON: dict[str, Any] = {
    "image": {"pullSecrets": ["regcred"]},
    "networkPolicy": {
        "enabled": True,
        "learnerIngressFrom": [{"namespaceSelector": {"matchLabels": {"team": "ml"}}}],
        "metricsIngressFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    },
    "metrics": {
        "annotations": True,
        "serviceMonitor": {"enabled": True, "force": True},
        "dashboards": {"enabled": True, "annotations": {"grafana_folder": "SkillFactory"}},
        "bundled": {
            "enabled": True,
            "grafana": {"ingressFrom": [{"namespaceSelector": {"matchLabels": {"team": "ml"}}}]},
        },
    },
    "serviceAccount": {"annotations": {"example.com/role": "x"}},
    "learner": {
        "persistence": {"storageClass": "fast"},
        "nodeSelector": {"gpu": "h100"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "extraArgs": ["--workers=4"],
        "extraEnv": [{"name": "FOO", "value": "bar"}],
    },
    "rollout": {
        "replicas": 3,
        "nodeSelector": {"gpu": "h100"},
        "gpus": 2,
        "samplers": 4,
        "tasksPerCall": 2,
        "model": "/shared/models/base",
        # Forced like the ServiceMonitors: there is no cluster (and no ray.io/v1 API) here.
        "ray": {
            "enabled": True,
            "force": True,
            "image": {"repository": "ghcr.io/skillfactory/skillfactory-ray"},
            "ingressFrom": [{"namespaceSelector": {"matchLabels": {"team": "ml"}}}],
        },
    },
    "reward": {"autoscaling": {"enabled": True}},
    "composer": {
        "enabled": True,
        "replicas": 2,
        "nodeSelector": {"pool": "cpu"},
        "extraArgs": ["--grace-seconds=30"],
        "extraEnv": [{"name": "FOO", "value": "bar"}],
    },
    "queue": {"claimIdleMs": 30000, "streamPrefix": "team-a"},
    "shared": {"persistence": {"storageClass": "nfs", "size": "1Ti", "keep": False}},
    "redis": {"persistence": {"storageClass": "fast"}, "maxmemory": "4gb"},
}
ALL_OFF: dict[str, Any] = {
    "networkPolicy": {"enabled": False},
    "metrics": {
        "annotations": False,
        "serviceMonitor": {"enabled": False},
        "dashboards": {"enabled": False},
    },
    "serviceAccount": {"create": False},
    "rbac": {"create": False},
    "learner": {"gpus": 0, "podDisruptionBudget": {"enabled": False}},
    "rollout": {"gpus": 0, "podDisruptionBudget": {"enabled": False}},
    "reward": {"autoscaling": {"enabled": False}, "podDisruptionBudget": {"enabled": False}},
    "composer": {"enabled": False},
    "shared": {"existingClaim": "team-shared"},
    "redis": {"enabled": False, "external": {"url": "rediss://redis.example.com:6380/0"}},
}
CASES = {"defaults": {}, "all-on": ALL_ON, "all-off": ALL_OFF}
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
MONITORING = {"prometheus", "grafana"}
"""Components of the bundled monitoring (HTTP probes, not gRPC health)."""
SERVICES = {"learner", "rollout", "reward", "composer"}
"""Components running a SkillFactory service (gRPC health, bearer tokens, TLS)."""


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values, name="sf", namespace="ml", is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


@pytest.fixture(scope="module", params=list(CASES))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(CASES[request.param])


def containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for d in docs:
        if d["kind"] in {"Deployment", "StatefulSet"}:
            pod = d["spec"]["template"]["spec"]
            for c in pod.get("initContainers", []) + pod["containers"]:
                out.append((d["metadata"]["name"], pod, c))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_lint_strict(case: str) -> None:
    for kube in KUBE_VERSIONS:
        report = helm.lint(CHART, CASES[case], strict=True, kube_version=f"v{kube}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, report


def test_every_object_validates_strictly(rendered: list[dict[str, Any]]) -> None:
    assert rendered
    for doc in rendered:
        if doc["kind"] in CRD_KINDS:
            continue
        for kube in KUBE_VERSIONS:
            kv.validate(doc, kube, strict=True)


def test_validation_can_fail() -> None:
    doc = next(d for d in render({}) if d["kind"] == "Deployment")
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, "1.33.0", strict=True)
    doc["spec"]["replicas"] = 1
    doc["spec"]["template"]["spec"]["containers"][0]["bogusField"] = 1
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, "1.33.0", strict=True)


def test_expected_objects() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in render(ALL_ON)}
    for expected in [
        ("StatefulSet", "sf-skillfactory-learner"),
        ("Service", "sf-skillfactory-learner-headless"),
        ("Deployment", "sf-skillfactory-rollout"),
        ("Deployment", "sf-skillfactory-reward"),
        ("HorizontalPodAutoscaler", "sf-skillfactory-reward"),
        ("StatefulSet", "sf-skillfactory-redis"),
        ("Secret", "sf-skillfactory-redis"),
        ("Secret", "sf-skillfactory-tokens"),
        *(
            ("Secret", f"sf-skillfactory-{c}-tls")
            for c in ("learner", "rollout", "reward", "composer")
        ),
        ("ServiceMonitor", "sf-skillfactory-rollout"),
        ("RayService", "sf-skillfactory-rollout-ray"),
        ("NetworkPolicy", "sf-skillfactory-rollout-ray"),
        ("PodDisruptionBudget", "sf-skillfactory-reward"),
        ("Deployment", "sf-skillfactory-composer"),
        ("Service", "sf-skillfactory-composer"),
        ("PodDisruptionBudget", "sf-skillfactory-composer"),
        ("NetworkPolicy", "sf-skillfactory-composer"),
        ("ServiceMonitor", "sf-skillfactory-composer"),
        ("PersistentVolumeClaim", "sf-skillfactory-shared"),
        ("Deployment", "sf-skillfactory-prometheus"),
        ("Deployment", "sf-skillfactory-grafana"),
        ("Role", "sf-skillfactory-prometheus"),
        ("Secret", "sf-skillfactory-grafana"),
        ("NetworkPolicy", "sf-skillfactory-grafana"),
        *(("ConfigMap", f"sf-skillfactory-dashboard-{p.stem}") for p in DASHBOARDS),
    ]:
        assert expected in kinds
    # ServiceMonitor only when the API exists (not offline) or forced.
    assert not any(d["kind"] == "ServiceMonitor" for d in render({}))
    # The RayService is off by default.
    assert not any(component(d) == "rollout-ray" for d in render({}))
    off = render(ALL_OFF)
    assert not any(d["kind"] in {"StatefulSet"} and "redis" in d["metadata"]["name"] for d in off)
    assert not any(d["kind"] == "ConfigMap" for d in off)
    # composer off; the shared volume is the existing claim, not one of the chart's.
    assert not any(component(d) == "composer" for d in off)
    assert not any(d["kind"] == "PersistentVolumeClaim" for d in off)
    # The bundled monitoring is off by default; the dashboards are on.
    defaults = render({})
    assert not any(component(d) in MONITORING for d in defaults)
    assert sum(d["kind"] == "ConfigMap" for d in defaults) == len(DASHBOARDS) >= 5


def test_rollout_gpu_scheduling() -> None:
    docs = render(ALL_ON)
    dep = next(
        d
        for d in docs
        if d["metadata"]["name"] == "sf-skillfactory-rollout" and d["kind"] == "Deployment"
    )
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 2


def test_services_get_no_rbac_and_no_api_token(rendered: list[dict[str, Any]]) -> None:
    """The services call no Kubernetes API (work goes through Redis, weights through the shared
    volume): no Role for them, and no service pod mounts a ServiceAccount token. Only the bundled
    Prometheus (not a service) has a Role."""
    roles = [d for d in rendered if d["kind"] in {"Role", "RoleBinding", "ClusterRole"}]
    assert all(component(d) == "prometheus" for d in roles), roles
    for d in rendered:
        if d["kind"] in {"Deployment", "StatefulSet"} and component(d) in SERVICES:
            assert d["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def test_probes_use_grpc_health_on_the_plaintext_health_port(
    rendered: list[dict[str, Any]],
) -> None:
    """The gRPC port speaks TLS, which the kubelet's gRPC probes do not: they ask the health port,
    where the service answers gRPC health alone in plaintext (`--health-port`)."""
    for name, _, c in containers(rendered):
        if "redis" in name or c["name"] in MONITORING:
            continue
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["health"] != ports["grpc"] and f"--health-port={ports['health']}" in c["args"]
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == ports["health"], (name, probe)


def test_monitoring_probes_use_http() -> None:
    found = [c for _, _, c in containers(render(ALL_ON)) if c["name"] in MONITORING]
    assert {c["name"] for c in found} == MONITORING
    for c in found:
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["port"] == "http", (c["name"], probe)


def test_security_defaults(rendered: list[dict[str, Any]]) -> None:
    found = containers(rendered)
    assert found
    for name, pod, c in found:
        psc, csc = pod["securityContext"], c["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0, name
        assert csc["runAsNonRoot"] is True and csc.get("runAsUser", 1) != 0, name
        assert csc["allowPrivilegeEscalation"] is False, name
        assert csc["readOnlyRootFilesystem"] is True, name
        assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), name
        limits = c["resources"]["limits"]
        assert limits.get("cpu") and limits.get("memory"), name
        assert c["resources"]["requests"].get("memory"), name


def test_network_policy_by_default() -> None:
    policies = [d for d in render({}) if d["kind"] == "NetworkPolicy"]
    names = {p["metadata"]["name"] for p in policies}
    assert "sf-skillfactory-redis" in names and "sf-skillfactory-learner" in names
    redis = next(p for p in policies if p["metadata"]["name"] == "sf-skillfactory-redis")
    (rule,) = redis["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "sf"


def test_no_secret_value_in_configmaps_or_notes(rendered: list[dict[str, Any]]) -> None:
    secrets = [
        base64.b64decode(v).decode()
        for d in rendered
        if d["kind"] == "Secret"
        for v in (d.get("data") or {}).values()
    ]
    blobs = [yaml.safe_dump(d) for d in rendered if d["kind"] != "Secret"]
    for s in secrets:
        assert len(s) >= 32
        assert not any(s in b for b in blobs)
    with helm.Chart.load(CHART) as chart:
        out = chart.render({}, name="sf", namespace="ml")
    notes = out["skillfactory/templates/NOTES.txt"]
    assert "kubectl -n ml port-forward svc/sf-skillfactory-learner" in notes
    assert "skillfactory submit" in notes and "composer" in notes
    tokens = next(d for d in yaml.safe_load_all(out["skillfactory/templates/secrets.yaml"]) if d)
    assert set(tokens["data"]) == {"admin", "submitter", "learner", "rollout"}
    for value in tokens["data"].values():
        assert base64.b64decode(value).decode() not in notes
    assert "--tls-ca skillfactory-ca.crt" in notes and "submitter.token" in notes


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rollout": {"replicas": "two"}}, "/rollout/replicas"),
        ({"reward": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}}, "maximum"),
        ({"podSecurityContext": {"runAsUser": 0}}, "/podSecurityContext/runAsUser"),
        ({"containerSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        (
            {"learner": {"resources": {"limits": {"memory": "lots"}}}},
            "/learner/resources/limits/memory",
        ),
        ({"learner": {"tokenValue": "x"}}, "tokenValue"),
        ({"redis": {"enabled": False}}, "url"),
        ({"redis": {"external": {"url": "redis://:pw@host"}}}, "/redis/external/url"),
        ({"rollout": {"engine": "tgi"}}, "/rollout/engine"),
        ({"rollout": {"samplers": 0}}, "/rollout/samplers"),
        ({"rollout": {"tasksPerCall": 0}}, "/rollout/tasksPerCall"),
        ({"composer": {"port": "grpc"}}, "/composer/port"),
        ({"composer": {"replicas": 0}}, "/composer/replicas"),
        ({"composer": {"resources": {"limits": {"memory": None}}}}, "memory"),
        ({"composer": {"dataRoot": "/elsewhere"}}, "dataRoot"),
        ({"composer": {"podDisruptionBudget": {"minAvailable": 1}}}, "minAvailable"),
        ({"queue": {"claimIdleMs": 0}}, "/queue/claimIdleMs"),
        ({"queue": {"streamPrefix": "a b"}}, "/queue/streamPrefix"),
        ({"shared": {"mountPath": "shared"}}, "/shared/mountPath"),
        ({"shared": {"mountPath": "/tmp/shared"}}, "/shared/mountPath"),
        ({"shared": {"mountPath": "/data"}}, "/shared/mountPath"),
        ({"shared": {"existingClaim": "Team_Share"}}, "/shared/existingClaim"),
        ({"shared": {"persistence": {"accessModes": ["ReadOnlyMany"]}}}, "accessModes"),
        ({"shared": {"persistence": {"size": "lots"}}}, "/shared/persistence/size"),
        ({"shared": {"readOnly": True}}, "readOnly"),
    ],
)
def test_schema_refuses_broken_values(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError, match=message):
            chart.validate_schema(values)
        with pytest.raises(helm.HelmError):
            chart.render(values, name="sf", namespace="ml")


def test_k8s_dir_in_sync() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render-k8s.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    docs = [d for d in yaml.safe_load_all((ROOT / "k8s" / "skillfactory.yaml").read_text()) if d]
    assert not any(d["kind"] == "Secret" for d in docs)
