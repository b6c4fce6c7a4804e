"""The optional Ray Serve rollout (rollout.ray): a KubeRay RayService running
skillfactory.serving.ray_rollout:app, rendered only when the ray.io/v1 RayService API exists (or
forced), next to the rollout Deployment that keeps the sampler workers. kubernetes-validate has no
schema for the CRD, so its pod templates are validated as Pods."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from skillfactory.serving.ray_rollout import SERVICER_FUNCTION, RayRolloutArgs

from .test_chart import ALL_ON, CHART, KUBE_VERSIONS, component, helm, kv, render
from .test_wiring import find, selects, workload

IMAGE = {"repository": "ghcr.io/skillfactory/skillfactory-ray", "tag": "0.1.0-ray"}
RAY: dict[str, Any] = {
    "rollout": {"model": "/shared/models/base", "ray": {"enabled": True, "image": IMAGE}}
}
FORCED: dict[str, Any] = {
    "rollout": {"model": "/shared/models/base", "ray": {**RAY["rollout"]["ray"], "force": True}}
}
RAY_API = ["ray.io/v1", "ray.io/v1/RayService"]
"""What Helm's capabilities list when the KubeRay operator's CRDs are installed."""
NAME = "sf-skillfactory-rollout-ray"


def render_with_api_versions(
    values: dict[str, Any], api_versions: list[str]
) -> list[dict[str, Any]]:
    """Render as `helm template --api-versions ...` (or an install on a cluster serving those
    APIs) would. helm-python-sdk's Chart.render has no api_versions argument, but the native
    render it calls takes them in its options (helm-python-sdk is pinned below 0.3)."""
    from helm_python import _native

    options = {"name": "sf", "namespace": "ml", "is_install": True, "api_versions": api_versions}
    with helm.Chart.load(CHART) as chart:
        out = json.loads(
            _native.call_string(
                "helm_render", chart._raw(), json.dumps(values), json.dumps(options)
            )
        )
    return [
        d
        for path, text in out.items()
        if not path.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text)
        if d
    ]


def ray_service(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(docs, "RayService", NAME)


def pods(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The head's and the (only) worker group's pod templates."""
    cluster = service["spec"]["rayClusterConfig"]
    (group,) = cluster["workerGroupSpecs"]
    return {"head": cluster["headGroupSpec"]["template"], "worker": group["template"]}


def serve_config(service: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(service["spec"]["serveConfigV2"])
    return config


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def test_rendered_when_the_api_exists_next_to_the_sampler_deployment() -> None:
    docs = render_with_api_versions(RAY, RAY_API)
    service = ray_service(docs)
    assert service["apiVersion"] == "ray.io/v1"
    # The Deployment stays: its sampler workers take the learner's GRPO tasks.
    rollout = workload(docs, "rollout")
    assert rollout["kind"] == "Deployment"
    assert "--samplers=4" in rollout["spec"]["template"]["spec"]["containers"][0]["args"]
    # The capability check alone: the group version without the kind is not enough.
    with pytest.raises(helm.HelmRenderError, match="ray.io/v1/RayService"):
        render_with_api_versions(RAY, ["ray.io/v1"])


def test_enabled_without_the_api_fails_unless_forced() -> None:
    with pytest.raises(helm.HelmRenderError, match="install the KubeRay operator"):
        render(RAY)
    assert ray_service(render(FORCED))
    # Off by default, API or not.
    assert not any(component(d) == "rollout-ray" for d in render_with_api_versions({}, RAY_API))


def test_serve_config_runs_our_app_with_the_values() -> None:
    values = merged(
        FORCED,
        {
            "rollout": {
                "gpus": 2,
                "ray": {
                    "model": "/shared/models/ray",
                    "engine": {"type": "vllm", "dtype": "bfloat16", "max_model_len": 4096},
                    "seed": 7,
                    "replicaCpus": 3,
                    "grpcPort": 9100,
                    "autoscaling": {
                        "minReplicas": 2,
                        "maxReplicas": 6,
                        "targetOngoingRequests": 1.5,
                        "maxOngoingRequests": 3,
                        "upscaleDelaySeconds": 5,
                        "downscaleDelaySeconds": 600,
                        "lookBackPeriodSeconds": 20,
                    },
                },
            }
        },
    )
    service = ray_service(render(values))
    config = serve_config(service)
    assert config["grpc_options"] == {"port": 9100, "grpc_servicer_functions": [SERVICER_FUNCTION]}
    (application,) = config["applications"]
    assert application["import_path"] == "skillfactory.serving.ray_rollout:app"
    assert application["route_prefix"]  # Serve's gRPC proxy routes only to apps with one
    args = RayRolloutArgs.model_validate(application["args"])  # the app's own argument model
    assert args.model == "/shared/models/ray"
    assert args.engine.model_dump() == {
        "type": "vllm",
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.85,
        "kv_cache_gib": 2.0,
        "enforce_eager": False,
        "max_model_len": 4096,
        "tensor_parallel_size": 1,
        "enable_prefix_caching": True,
        "enable_sleep_mode": False,
    }
    assert (args.seed, args.num_cpus, args.num_gpus) == (7, 3, 2)
    assert args.autoscaling.ray_config() == {
        "min_replicas": 2,
        "max_replicas": 6,
        "target_ongoing_requests": 1.5,
        "upscale_delay_s": 5,
        "downscale_delay_s": 600,
        "look_back_period_s": 20,
    }
    assert args.autoscaling.max_ongoing_requests == 3
    # One replica per worker pod: the worker group scales over the same range.
    (group,) = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert (group["minReplicas"], group["maxReplicas"], group["replicas"]) == (2, 6, 2)
    assert service["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == "2.60.0"


def test_serve_config_defaults_and_engine_from_rollout_model() -> None:
    values = merged(FORCED, {"rollout": {"ray": {"engine": {"type": "transformers"}}}})
    (application,) = serve_config(ray_service(render(values)))["applications"]
    args = RayRolloutArgs.model_validate(application["args"])
    assert args.model == "/shared/models/base"  # rollout.model
    assert args.engine.type == "transformers"
    assert args.autoscaling.ray_config() == {
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": 2,
        "upscale_delay_s": 10,
        "downscale_delay_s": 300,
        "look_back_period_s": 30,
    }


def test_serve_config_is_a_valid_ray_serve_config() -> None:
    schema = pytest.importorskip("ray.serve.schema", reason="ray (the ray extra) is not installed")
    config = serve_config(ray_service(render(FORCED)))
    parsed = schema.ServeDeploySchema.model_validate(config)
    assert parsed.grpc_options.port == 9000
    assert parsed.applications[0].import_path == "skillfactory.serving.ray_rollout:app"


def test_grpc_port_is_the_serve_port_of_every_ray_pod() -> None:
    service = ray_service(render(merged(FORCED, {"rollout": {"ray": {"grpcPort": 9100}}})))
    for role, template in pods(service).items():
        (container,) = template["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["serve"] == 9100, role  # KubeRay's serve Service exposes only this one
        assert sum(p["name"] == "serve" for p in container["ports"]) == 1, role
        assert 9100 not in {n for name, n in ports.items() if name != "serve"}, role
    assert serve_config(service)["grpc_options"]["port"] == 9100


def test_ray_pods_are_non_root_with_limits() -> None:
    values = merged(
        FORCED,
        {
            "rollout": {
                "gpus": 2,
                "nodeSelector": {"gpu": "h100"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "ray": {"head": {"nodeSelector": {"pool": "cpu"}}},
            }
        },
    )
    service = ray_service(render(values))
    templates = pods(service)
    for role, template in templates.items():
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, role
        assert spec["securityContext"]["runAsUser"] != 0, role
        (container,) = spec["containers"]
        csc = container["securityContext"]
        assert csc["runAsNonRoot"] is True and csc.get("runAsUser", 1) != 0, role
        assert csc["allowPrivilegeEscalation"] is False, role
        assert csc["capabilities"] == {"drop": ["ALL"]}, role
        # Ray writes under /tmp (an emptyDir) only: the root filesystem is read-only (issue 15).
        assert csc["readOnlyRootFilesystem"] is True, role
        limits = container["resources"]["limits"]
        assert limits.get("cpu") and limits.get("memory"), role
        assert container["image"] == "ghcr.io/skillfactory/skillfactory-ray:0.1.0-ray", role
    worker = templates["worker"]["spec"]
    (container,) = worker["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert worker["nodeSelector"] == {"gpu": "h100"}
    assert worker["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert worker["automountServiceAccountToken"] is False
    head = templates["head"]["spec"]
    assert head["nodeSelector"] == {"pool": "cpu"}
    assert "nvidia.com/gpu" not in head["containers"][0]["resources"]["limits"]
    assert "tolerations" not in head
    # KubeRay's ServiceAccount (autoscaler RBAC) for the head, not the chart's.
    assert "serviceAccountName" not in head
    assert service["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    options = service["spec"]["rayClusterConfig"]["autoscalerOptions"]
    assert options["securityContext"]["runAsNonRoot"] is True
    # KubeRay's autoscaler sidecar gets no /tmp mount of ours: its root stays writable.
    assert options["securityContext"]["readOnlyRootFilesystem"] is False
    assert options["resources"]["limits"]["cpu"] and options["resources"]["limits"]["memory"]


@pytest.mark.parametrize("values", [FORCED, ALL_ON], ids=["ray", "all-on"])
def test_ray_pod_templates_validate_as_pods(values: dict[str, Any]) -> None:
    for role, template in pods(ray_service(render(values))).items():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"]}
        pod["spec"] = template["spec"]
        for kube in KUBE_VERSIONS:
            try:
                kv.validate(pod, kube, strict=True)
            except kv.ValidationError as error:
                pytest.fail(f"{role}: {error}")


def test_shared_volume_and_token() -> None:
    values = merged(
        FORCED,
        {
            "shared": {"mountPath": "/mnt/sf", "existingClaim": "team-shared"},
            "auth": {"existingSecret": "sf-token"},
        },
    )
    docs = render(values)
    rollout = workload(docs, "rollout")["spec"]["template"]["spec"]
    rollout_mount = next(
        m for m in rollout["containers"][0]["volumeMounts"] if m["name"] == "shared"
    )
    for role, template in pods(ray_service(docs)).items():
        spec = template["spec"]
        (container,) = spec["containers"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mount = next(m for m in container["volumeMounts"] if m["name"] == "shared")
        # The same claim at the same path as the rollout Deployment, read-only.
        assert (
            mount == rollout_mount == {"name": "shared", "mountPath": "/mnt/sf", "readOnly": True}
        )
        assert volumes["shared"]["persistentVolumeClaim"] == {"claimName": "team-shared"}, role
        assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), role
        env = {e["name"]: e for e in container["env"]}
        ref = env["SKILLFACTORY_TOKEN"]["valueFrom"]["secretKeyRef"]
        # The learner role's token: the Ray pods hold no token that may submit or cancel runs.
        assert ref == {"name": "sf-token", "key": "learner"}, role
    # The generated tokens Secret when none is given.
    for template in pods(ray_service(render(FORCED))).values():
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        ref = env["SKILLFACTORY_TOKEN"]["valueFrom"]["secretKeyRef"]
        secret = find(render(FORCED), "Secret", ref["name"])
        assert ref["key"] in secret["data"]


def admitted_ports(policy: dict[str, Any], labels: dict[str, str]) -> set[Any]:
    """Ports of `policy`'s rules whose pod-selector peers (no namespace selector) admit `labels`;
    "all" for a rule without ports."""
    ports: set[Any] = set()
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            if (
                "podSelector" in peer
                and "namespaceSelector" not in peer
                and selects(peer["podSelector"], labels)
            ):
                if "ports" not in rule:
                    ports.add("all")
                ports.update(p["port"] for p in rule.get("ports", []))
    return ports


def test_network_policy_lets_the_learner_reach_the_serve_port() -> None:
    values = merged(FORCED, {"rollout": {"ray": {"grpcPort": 9100}}})
    docs = render(values)
    policy = find(docs, "NetworkPolicy", NAME)
    head = pods(ray_service(docs))["head"]
    assert selects(policy["spec"]["podSelector"], head["metadata"]["labels"])
    learner = workload(docs, "learner")["spec"]["template"]["metadata"]["labels"]
    assert admitted_ports(policy, learner) == {9100}
    # The Ray pods reach each other on every port (GCS, raylets, object transfers) but the
    # dashboard's, whose job API runs code without authentication (issue 15): only the operator.
    ranges = [
        (p["port"], p.get("endPort", p["port"]))
        for rule in policy["spec"]["ingress"]
        if any(
            selects(peer.get("podSelector", {}), head["metadata"]["labels"])
            for peer in rule["from"]
        )
        and not any("namespaceSelector" in peer for peer in rule["from"])
        for p in rule.get("ports", [{"port": 1, "endPort": 65535}])
        if p.get("protocol", "TCP") == "TCP"
    ]
    assert not any(low <= 8265 <= high for low, high in ranges)
    for port in (6379, 8080, 10001, 52365, 9100, 30000, 65535):
        assert any(low <= port <= high for low, high in ranges), port
    # Pods of another release get nothing.
    assert admitted_ports(policy, {**learner, "app.kubernetes.io/instance": "other"}) == set()
    # The KubeRay operator (default peers of values.yaml) reaches the dashboard and its agents.
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["rollout"]["ray"]
    (operator,) = [
        r for r in policy["spec"]["ingress"] if r["from"] == defaults["operatorIngressFrom"]
    ]
    assert {p["port"] for p in operator["ports"]} == {8265, 52365}
    # Redis still admits only the learner and the rollout Deployment's pods.
    redis = find(docs, "NetworkPolicy", "sf-skillfactory-redis")
    assert admitted_ports(redis, head["metadata"]["labels"]) == set()


def test_network_policy_extra_peers_and_bundled_prometheus() -> None:
    docs = render(merged(ALL_ON, {"rollout": {"ray": {"grpcPort": 9000}}}))
    policy = find(docs, "NetworkPolicy", NAME)
    peers = {json.dumps(rule["from"], sort_keys=True): rule for rule in policy["spec"]["ingress"]}
    extra = peers[json.dumps(ALL_ON["rollout"]["ray"]["ingressFrom"], sort_keys=True)]
    assert [p["port"] for p in extra["ports"]] == [9000]
    prometheus = find(docs, "Deployment", "sf-skillfactory-prometheus")
    labels = prometheus["spec"]["template"]["metadata"]["labels"]
    metrics = {
        p["containerPort"]
        for p in pods(ray_service(docs))["worker"]["spec"]["containers"][0]["ports"]
        if p["name"] == "metrics"
    }
    assert admitted_ports(policy, labels) == metrics == {8080}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rollout": {"ray": {"enabled": "yes"}}}, "/rollout/ray/enabled"),
        ({"rollout": {"ray": {"force": 1}}}, "/rollout/ray/force"),
        ({"rollout": {"ray": {"replicas": 2}}}, "replicas"),
        ({"rollout": {"ray": {"enabled": True}}}, "/rollout/ray/image/repository"),
        ({"rollout": {"ray": {"image": {"name": "x"}}}}, "name"),
        ({"rollout": {"ray": {"rayVersion": "latest"}}}, "/rollout/ray/rayVersion"),
        ({"rollout": {"ray": {"grpcPort": 0}}}, "/rollout/ray/grpcPort"),
        ({"rollout": {"ray": {"grpcPort": 8265}}}, "/rollout/ray/grpcPort"),
        ({"rollout": {"ray": {"grpcPort": "9000"}}}, "/rollout/ray/grpcPort"),
        ({"rollout": {"ray": {"replicaCpus": 0}}}, "/rollout/ray/replicaCpus"),
        ({"rollout": {"ray": {"engine": {"type": "tgi"}}}}, "/rollout/ray/engine"),
        ({"rollout": {"ray": {"engine": {"type": "vllm", "compile": True}}}}, "compile"),
        (
            {"rollout": {"ray": {"engine": {"type": "transformers", "enforce_eager": True}}}},
            "enforce_eager",
        ),
        (
            {"rollout": {"ray": {"engine": {"type": "vllm", "gpu_memory_utilization": 1.5}}}},
            "gpu_memory_utilization",
        ),
        ({"rollout": {"ray": {"autoscaling": {"minReplicas": -1}}}}, "minReplicas"),
        ({"rollout": {"ray": {"autoscaling": {"maxReplicas": 0}}}}, "maxReplicas"),
        (
            {"rollout": {"ray": {"autoscaling": {"targetOngoingRequests": 0}}}},
            "targetOngoingRequests",
        ),
        (
            {"rollout": {"ray": {"autoscaling": {"maxOngoingRequests": 1.5}}}},
            "maxOngoingRequests",
        ),
        (
            {"rollout": {"ray": {"autoscaling": {"lookBackPeriodSeconds": 10}}}},
            "lookBackPeriodSeconds",
        ),
        ({"rollout": {"ray": {"autoscaling": {"replicas": 3}}}}, "replicas"),
        (
            {"rollout": {"ray": {"head": {"resources": {"limits": {"memory": None}}}}}},
            "memory",
        ),
        ({"rollout": {"ray": {"autoscalerResources": {"limits": None}}}}, "limits"),
        ({"rollout": {"ray": {"operatorIngressFrom": {"namespace": "x"}}}}, "operatorIngressFrom"),
    ],
)
def test_schema_refuses_broken_ray_values(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match=message):
        chart.validate_schema(values)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"rollout": {"model": "", "ray": {"model": ""}}}, "needs a model"),
        (
            {"rollout": {"ray": {"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}}},
            r"maxReplicas \(2\) must be at least minReplicas \(3\)",
        ),
        (
            {"rollout": {"ray": {"autoscaling": {"targetOngoingRequests": 5}}}},
            r"maxOngoingRequests \(4\) must be at least targetOngoingRequests \(5\)",
        ),
    ],
)
def test_rendering_refuses_inconsistent_ray_values(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render(merged(FORCED, extra))
