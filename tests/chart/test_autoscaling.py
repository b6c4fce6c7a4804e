"""Elastic rollouts in the chart (rollout.autoscaling): a KEDA ScaledObject on the task streams
when KEDA's API exists (forced here with mode keda: no cluster, no API discovery offline), else
the learner's own scaler with a Role on the rollout Deployment's scale subresource alone."""

from __future__ import annotations

from typing import Any

from .test_chart import CHART, CRD_KINDS, KUBE_VERSIONS, helm, kv, render

LEARNER_MODE = {"rollout": {"autoscaling": {"enabled": True, "mode": "learner", "maxReplicas": 6}}}
KEDA_MODE = {"rollout": {"autoscaling": {"enabled": True, "mode": "keda", "minReplicas": 0}}}


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def learner_container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (learner,) = [
        d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("-learner")
    ]
    pod = learner["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def test_off_by_default_and_the_learner_then_calls_no_api() -> None:
    docs = render({})
    assert not [d for d in docs if d["kind"] in ("ScaledObject", "Role", "RoleBinding")]
    pod, container = learner_container(docs)
    assert pod["automountServiceAccountToken"] is False
    assert not [a for a in container["args"] if a.startswith("--autoscale")]


def test_the_learner_scales_with_a_role_on_the_scale_subresource_only() -> None:
    docs = render(LEARNER_MODE)
    role = one(docs, "Role", "sf-skillfactory-rollout-scaler")
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": ["sf-skillfactory-rollout"],
            "verbs": ["get", "patch", "update"],
        }
    ]
    binding = one(docs, "RoleBinding", "sf-skillfactory-rollout-scaler")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sf-skillfactory-rollout-scaler", "namespace": "ml"}
    ]
    pod, container = learner_container(docs)
    assert pod["serviceAccountName"] == "sf-skillfactory-rollout-scaler"
    assert pod["automountServiceAccountToken"] is True
    assert "--autoscale-deployment=sf-skillfactory-rollout" in container["args"]
    assert "--max-rollouts=6" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            for kube in KUBE_VERSIONS:
                kv.validate(doc, kube, strict=True)


def test_keda_scales_on_both_task_streams_and_owns_the_replica_count() -> None:
    docs = render(KEDA_MODE)
    scaled = one(docs, "ScaledObject", "sf-skillfactory-rollout")
    spec = scaled["spec"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert spec["scaleTargetRef"] == {"name": "sf-skillfactory-rollout"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 4)
    triggers = {(t["metadata"]["stream"], t["metadata"]["consumerGroup"]) for t in spec["triggers"]}
    assert triggers == {
        ("skillfactory:prompts", "samplers"),
        ("skillfactory:generations", "generators"),
    }
    for trigger in spec["triggers"]:
        assert trigger["type"] == "redis-streams"
        assert trigger["metadata"]["address"] == "sf-skillfactory-redis.ml.svc:6379"
        assert trigger["authenticationRef"] == {"name": "sf-skillfactory-rollout-redis"}
    auth = one(docs, "TriggerAuthentication", "sf-skillfactory-rollout-redis")
    assert auth["spec"]["secretTargetRef"][0]["parameter"] == "password"
    rollout = one(docs, "Deployment", "sf-skillfactory-rollout")
    assert "replicas" not in rollout["spec"]  # KEDA's HPA sets it
    assert not [d for d in docs if d["kind"] == "Role"]
    report = helm.lint(CHART, KEDA_MODE, strict=True, kube_version=f"v{KUBE_VERSIONS[-1]}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report
