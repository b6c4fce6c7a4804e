"""The chart's monitoring: dashboard ConfigMaps, the bundled Prometheus + Grafana, their RBAC and
NetworkPolicies, and the scrape config run through a real Prometheus's relabelling."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from support.prometheus import PrometheusServer, prometheus_binary

from .test_chart import ALL_ON, CHART, DASHBOARDS, helm, render

BUNDLED = {"metrics": {"bundled": {"enabled": True}}}


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def pod_spec(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = find(docs, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_dashboard_configmaps_carry_the_files_and_the_sidecar_label() -> None:
    docs = render({})
    for path in DASHBOARDS:
        config_map = find(docs, "ConfigMap", f"sf-skillfactory-dashboard-{path.stem}")
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config_map["data"][path.name]) == json.loads(path.read_text())
    folder = {"metrics": {"dashboards": {"annotations": {"grafana_folder": "ML"}}}}
    config_map = find(render(folder), "ConfigMap", "sf-skillfactory-dashboard-overview")
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "ML"}


def test_bundled_grafana_provisions_prometheus_and_every_dashboard() -> None:
    docs = render({**BUNDLED, "metrics": {**BUNDLED["metrics"], "dashboards": {"enabled": False}}})
    pod = pod_spec(docs, "sf-skillfactory-grafana")
    volumes = {v["name"]: v for v in pod["volumes"]}
    projected = {s["configMap"]["name"] for s in volumes["dashboards"]["projected"]["sources"]}
    assert projected == {f"sf-skillfactory-dashboard-{p.stem}" for p in DASHBOARDS}
    assert all(find(docs, "ConfigMap", name) for name in projected)  # rendered for Grafana

    provisioning = find(docs, "ConfigMap", "sf-skillfactory-grafana")["data"]
    (source,) = yaml.safe_load(provisioning["datasources.yaml"])["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    service = find(docs, "Service", "sf-skillfactory-prometheus")
    assert (
        source["url"] == f"http://sf-skillfactory-prometheus:{service['spec']['ports'][0]['port']}"
    )
    (provider,) = yaml.safe_load(provisioning["dashboards.yaml"])["providers"]
    (grafana,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in grafana["volumeMounts"]}
    assert provider["options"]["path"] == mounts["dashboards"]
    env = {e["name"]: e for e in grafana["env"]}
    password = env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]
    secret = find(docs, "Secret", password["name"])
    assert len(base64.b64decode(secret["data"][password["key"]])) >= 32


def test_bundled_prometheus_may_only_list_and_watch_pods() -> None:
    docs = render(BUNDLED)
    role = find(docs, "Role", "sf-skillfactory-prometheus")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    binding = find(docs, "RoleBinding", "sf-skillfactory-prometheus")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    pod = pod_spec(docs, "sf-skillfactory-prometheus")
    assert [s["name"] for s in binding["subjects"]] == [pod["serviceAccountName"]]
    assert pod["automountServiceAccountToken"] is True  # kubernetes_sd reads the API
    grafana = pod_spec(docs, "sf-skillfactory-grafana")
    assert grafana["automountServiceAccountToken"] is False
    assert not any(d["kind"] == "ClusterRole" for d in docs)


def test_network_policies_admit_prometheus_to_metrics_ports_only() -> None:
    docs = render(ALL_ON)
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    labels = {
        name: find(docs, "Deployment", f"sf-skillfactory-{name}")["spec"]["template"]["metadata"][
            "labels"
        ]
        for name in ("prometheus", "grafana")
    }
    for component in ("learner", "rollout", "reward", "composer"):
        service = find(docs, "Service", f"sf-skillfactory-{component}")
        metrics_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "metrics")
        admitted = [
            {p["port"] for p in rule["ports"]}
            for rule in policies[f"sf-skillfactory-{component}"]["spec"]["ingress"]
            for peer in rule["from"]
            if "podSelector" in peer
            and "namespaceSelector" not in peer
            and matches(peer["podSelector"]["matchLabels"], labels["prometheus"])
        ]
        assert admitted == [{metrics_port}], component
    redis_peers = policies["sf-skillfactory-redis"]["spec"]["ingress"][0]["from"]
    for pod_labels in labels.values():
        assert not any(matches(p["podSelector"]["matchLabels"], pod_labels) for p in redis_peers)
    (rule,) = policies["sf-skillfactory-prometheus"]["spec"]["ingress"]
    assert matches(rule["from"][0]["podSelector"]["matchLabels"], labels["grafana"])
    (rule,) = policies["sf-skillfactory-grafana"]["spec"]["ingress"]
    assert rule["from"] == ALL_ON["metrics"]["bundled"]["grafana"]["ingressFrom"]
    closed = find(render(BUNDLED), "NetworkPolicy", "sf-skillfactory-grafana")
    assert closed["spec"]["ingress"] == []


def test_service_monitors_keep_the_services_own_labels() -> None:
    for d in render(ALL_ON):
        if d["kind"] == "ServiceMonitor":
            assert all(e["honorLabels"] is True for e in d["spec"]["endpoints"])


def test_notes_say_how_to_reach_grafana() -> None:
    with helm.Chart.load(CHART) as chart:
        out = chart.render(BUNDLED, name="sf", namespace="ml")
    notes = out["skillfactory/templates/NOTES.txt"]
    assert "port-forward svc/sf-skillfactory-grafana 3000:3000" in notes
    assert "get secret sf-skillfactory-grafana" in notes
    secret = next(
        d
        for d in yaml.safe_load_all(out["skillfactory/templates/grafana.yaml"])
        if d and d["kind"] == "Secret"
    )
    assert base64.b64decode(secret["data"]["password"]).decode() not in notes


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"metrics": {"bundled": {"prometheus": {"retention": "forever"}}}}, "retention"),
        ({"metrics": {"bundled": {"grafana": {"image": {"tag": ""}}}}}, "tag"),
        ({"metrics": {"bundled": {"grafana": {"adminPassword": "x"}}}}, "adminPassword"),
        ({"metrics": {"dashboards": {"labels": {"grafana_dashboard": 1}}}}, "grafana_dashboard"),
    ],
)
def test_schema_refuses_broken_monitoring_values(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match=message):
        chart.validate_schema(values)


@pytest.mark.skipif(prometheus_binary() is None, reason="the prometheus binary is missing")
def test_scrape_config_keeps_metrics_ports_and_labels_them() -> None:
    """The rendered scrape job, with its pod discovery replaced by targets carrying the labels
    discovery would attach (the OS package's Prometheus has no Kubernetes discovery), run through
    a real Prometheus: only the `metrics` port is kept, labelled with namespace, pod, component."""
    config_map = find(render(BUNDLED), "ConfigMap", "sf-skillfactory-prometheus")
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    (job,) = config["scrape_configs"]
    (discovery,) = job.pop("kubernetes_sd_configs")
    assert discovery["role"] == "pod" and discovery["namespaces"] == {"names": ["ml"]}
    assert discovery["selectors"] == [
        {
            "role": "pod",
            "label": "app.kubernetes.io/instance=sf,app.kubernetes.io/part-of=skillfactory",
        }
    ]
    job["static_configs"] = [
        {"targets": [f"127.0.0.1:{port}"], "labels": pod_meta_labels(name)}
        for port, name in ((1, "metrics"), (2, "grpc"))
    ]
    with PrometheusServer(config=config) as prom:
        (target,), dropped = prom.wait_for_discovery(2)
    assert target["scrapeUrl"] == "http://127.0.0.1:1/metrics"
    assert {k: target["labels"][k] for k in ("namespace", "pod", "component")} == {
        "namespace": "ml",
        "pod": "sf-skillfactory-reward-abc",
        "component": "reward",
    }
    assert [d["discoveredLabels"]["__address__"] for d in dropped] == ["127.0.0.1:2"]


def pod_meta_labels(port_name: str) -> dict[str, str]:
    return {
        "__meta_kubernetes_namespace": "ml",
        "__meta_kubernetes_pod_name": "sf-skillfactory-reward-abc",
        "__meta_kubernetes_pod_label_app_kubernetes_io_component": "reward",
        "__meta_kubernetes_pod_container_port_name": port_name,
    }
