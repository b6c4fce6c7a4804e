"""The multi-node learner (learner.nodes × learner.procsPerNode > 1): every learner pod runs
torchrun with its ordinal as node rank and pod 0 as master through the headless Service; only pod
0 (rank 0) is behind the API Service, probed for gRPC health and scraped; the learner pods reach
each other on every port. With one process the learner renders as it always did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.prometheus import PrometheusServer, prometheus_binary

from . import test_chart as chart_checks
from .test_chart import ALL_ON, CHART, CRD_KINDS, KUBE_VERSIONS, component, helm, kv, render
from .test_wiring import container, find, options, parse, selects, workload

MULTI: dict[str, Any] = {"learner": {"nodes": 2, "procsPerNode": 4}}
MULTI_ALL_ON: dict[str, Any] = {
    **ALL_ON,
    "learner": {**ALL_ON["learner"], "nodes": 3, "procsPerNode": 8, "gpus": 8},
}
STS = "sf-skillfactory-learner"
HEADLESS = "sf-skillfactory-learner-headless"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"

# The learner's arguments with default values (issue 15 added metrics on the pod address, the
# plaintext health port, tokens per role, TLS and run limits): a one-process learner runs exactly
# this, and a multi-node one the same after torchrun.
DEFAULT_LEARNER_ARGS = [
    "learner",
    "serve",
    "--host=0.0.0.0",
    "--port=50051",
    "--metrics-host=0.0.0.0",
    "--metrics-port=9090",
    "--health-port=50052",
    "--tokens-dir=/var/run/skillfactory/tokens",
    "--client-token-file=/var/run/skillfactory/client/token",
    "--tls-cert=/var/run/skillfactory/tls/tls.crt",
    "--tls-key=/var/run/skillfactory/tls/tls.key",
    "--tls-ca=/var/run/skillfactory/tls/ca.crt",
    "--state-dir=/data/state",
    "--data-root=/shared",
    "--redis-url=redis://sf-skillfactory-redis:6379/0",
    "--claim-idle-ms=60000",
    "--stream-prefix=skillfactory",
    "--weights-dir=/shared/weights",
    "--composer=sf-skillfactory-composer:50051",
    "--max-steps=1000",
    "--max-problems=100000",
    "--max-tokens=16384",
    "--max-samples=64",
    "--max-epochs=10",
    "--max-spec-bytes=1048576",
    "--log-level=info",
]


def merged(values: dict[str, Any], learner: dict[str, Any]) -> dict[str, Any]:
    return {**values, "learner": {**values.get("learner", {}), **learner}}


def pod_labels(docs: list[dict[str, Any]], ordinal: int) -> dict[str, str]:
    """The labels learner pod `ordinal` gets: the template's and the controller's pod name."""
    labels = dict(workload(docs, "learner")["spec"]["template"]["metadata"]["labels"])
    return {**labels, POD_NAME_LABEL: f"{STS}-{ordinal}"}


def launch(c: dict[str, Any], pod: str, tmp_path: Path) -> tuple[int, list[str], str]:
    """Run the container's command + args the way the kubelet would, with POD_NAME=`pod` and a
    `python` on PATH that only prints the arguments it got: (exit code, python's argv, stderr)."""
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    env = {**os.environ, "POD_NAME": pod, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        [*c["command"], *c["args"]], env=env, capture_output=True, text=True, check=False
    )
    argv = json.loads(done.stdout) if done.returncode == 0 else []
    return done.returncode, argv, done.stderr


# --- one process: unchanged ----------------------------------------------------------------------


@pytest.mark.parametrize("learner", [{}, {"nodes": 1, "procsPerNode": 1}])
def test_a_one_process_learner_renders_as_before(learner: dict[str, Any]) -> None:
    docs = render({"learner": learner})
    sts = workload(docs, "learner")
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
    c = container(docs, "learner")
    assert "command" not in c  # the image's entrypoint, `skillfactory`
    assert c["args"] == DEFAULT_LEARNER_ARGS
    assert [p["name"] for p in c["ports"]] == ["grpc", "metrics", "health"]
    assert all(c[p]["grpc"] == {"port": 50052} for p in ("startupProbe", "livenessProbe"))
    assert "POD_NAME" not in {e["name"] for e in c["env"]}
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    volumes = {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes == {"tmp", "tokens", "client-token", "tls", "shared"}
    assert POD_NAME_LABEL not in find(docs, "Service", STS)["spec"]["selector"]
    headless = find(docs, "Service", HEADLESS)
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc"]
    policy = find(docs, "NetworkPolicy", STS)
    assert all(rule.get("ports") for rule in policy["spec"]["ingress"])


def test_the_checked_in_manifests_keep_the_one_process_learner() -> None:
    docs = [d for d in yaml.safe_load_all((CHART.parent / "k8s" / "skillfactory.yaml").open()) if d]
    sts = next(d for d in docs if d["kind"] == "StatefulSet" and component(d) == "learner")
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert "command" not in c and c["args"][:2] == ["learner", "serve"]
    assert sts["spec"]["replicas"] == 1


# --- several processes -------------------------------------------------------------------------


@pytest.mark.parametrize("values", [MULTI, MULTI_ALL_ON], ids=["2x4", "3x8-all-on"])
def test_multi_node_lints_and_validates_strictly(values: dict[str, Any]) -> None:
    for kube in KUBE_VERSIONS:
        report = helm.lint(CHART, values, strict=True, kube_version=f"v{kube}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, report
    docs = render(values)
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        for kube in KUBE_VERSIONS:
            kv.validate(doc, kube, strict=True)
    chart_checks.test_security_defaults(docs)
    chart_checks.test_services_get_no_rbac_and_no_api_token(docs)
    chart_checks.test_no_secret_value_in_configmaps_or_notes(docs)


def test_the_statefulset_runs_one_pod_per_node_started_together() -> None:
    docs = render(MULTI)
    sts = workload(docs, "learner")
    assert sts["spec"]["replicas"] == 2
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == HEADLESS
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c[
        "env"
    ]
    # NCCL's shared memory: a memory-backed /dev/shm.
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert {"name": "shm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    # Per-pod claims for the run state stay (rank 0's is the one used).
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"


@pytest.mark.parametrize("ordinal", [0, 1])
def test_the_torchrun_command_parses(ordinal: int, tmp_path: Path) -> None:
    """The wrapper's exec'd command line, parsed by torchrun's own parser (node rank = the pod's
    ordinal, pod 0 as master), and what follows `-m skillfactory.cli` by the CLI's parser."""
    run = pytest.importorskip("torch.distributed.run", reason="torch is not installed")
    docs = render(MULTI)
    c = container(docs, "learner")
    code, argv, err = launch(c, f"{STS}-{ordinal}", tmp_path)
    assert code == 0, err
    assert argv[:2] == ["-m", "torch.distributed.run"]
    torchrun = run.get_args_parser().parse_args(argv[2:])
    assert (torchrun.nnodes, torchrun.nproc_per_node) == ("2", "4")
    assert torchrun.node_rank == ordinal
    assert torchrun.rdzv_backend == "static"  # fixed ranks: global rank 0 is pod 0's first
    assert torchrun.module and torchrun.training_script == "skillfactory.cli"
    host = f"{STS}-0.{HEADLESS}.ml.svc"
    assert (torchrun.master_addr, torchrun.master_port) == (host, 29500)

    assert torchrun.training_script_args == c["args"]
    ctx = parse(torchrun.training_script_args)
    assert ctx.info_name == "serve" and ctx.parent.info_name == "learner"
    assert ctx.params["host"] == "0.0.0.0" and ctx.params["port"] == 50051
    assert str(ctx.params["state_dir"]) == "/data/state"
    # The rest of the learner's command line is the one-process learner's.
    assert c["args"] == DEFAULT_LEARNER_ARGS


def test_the_wrapper_refuses_a_pod_name_without_ordinal(tmp_path: Path) -> None:
    c = container(render(MULTI), "learner")
    for pod in ("", "learner", f"{STS}-x"):
        code, _, err = launch(c, pod, tmp_path)
        assert code == 1 and "no StatefulSet ordinal" in err, pod


def test_the_headless_service_publishes_every_node_and_the_rendezvous_port() -> None:
    docs = render(MULTI)
    headless = find(docs, "Service", HEADLESS)
    spec = headless["spec"]
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is True
    for ordinal in (0, 1):
        assert selects({"matchLabels": spec["selector"]}, pod_labels(docs, ordinal))
    ports = {p["name"]: p for p in spec["ports"]}
    assert ports["rendezvous"]["port"] == 29500
    c = container(docs, "learner")
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert named[ports["rendezvous"]["targetPort"]] == 29500


def test_the_api_service_and_its_monitor_reach_pod_0_only() -> None:
    docs = render(MULTI_ALL_ON)
    service = find(docs, "Service", STS)
    selector = {"matchLabels": service["spec"]["selector"]}
    assert service["spec"]["selector"][POD_NAME_LABEL] == f"{STS}-0"
    assert selects(selector, pod_labels(docs, 0))
    assert not any(selects(selector, pod_labels(docs, n)) for n in (1, 2))
    # The ServiceMonitor picks the API Service (the headless one has no metrics port).
    monitor = find(docs, "ServiceMonitor", STS)
    picked = [
        s["metadata"]["name"]
        for s in docs
        if s["kind"] == "Service" and selects(monitor["spec"]["selector"], s["metadata"]["labels"])
    ]
    assert set(picked) == {STS, HEADLESS}
    ports = {p["name"] for p in find(docs, "Service", HEADLESS)["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["port"] not in ports


def test_gpus_per_pod_are_the_processes_per_node() -> None:
    def gpus(learner: dict[str, Any]) -> Any:
        limits = container(render({"learner": learner}), "learner")["resources"]["limits"]
        return limits.get("nvidia.com/gpu")

    assert gpus({"nodes": 2, "procsPerNode": 4}) == 4
    assert gpus({"nodes": 1, "procsPerNode": 8, "gpus": 8}) == 8
    assert gpus({"nodes": 3, "procsPerNode": 1}) == 1
    assert gpus({"nodes": 2, "procsPerNode": 4, "gpus": 0}) is None  # CPU (gloo)
    assert gpus({"gpus": 2}) == 2  # one process: learner.gpus as before
    c = container(render(MULTI), "learner")
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 4


def test_learner_pods_reach_each_other_on_every_port() -> None:
    docs = render(MULTI)
    policy = find(docs, "NetworkPolicy", STS)
    open_rules = [r for r in policy["spec"]["ingress"] if "ports" not in r]
    (rule,) = open_rules
    (peer,) = rule["from"]
    assert all(selects(peer["podSelector"], pod_labels(docs, n)) for n in (0, 1))
    others = [workload(docs, name) for name in ("rollout", "reward", "composer", "redis")]
    assert not any(
        selects(peer["podSelector"], w["spec"]["template"]["metadata"]["labels"]) for w in others
    )


def test_the_disruption_budget_covers_every_node() -> None:
    docs = render(MULTI)
    pdb = find(docs, "PodDisruptionBudget", STS)
    assert pdb["spec"]["maxUnavailable"] == 0  # losing any node stops the process group
    assert all(selects(pdb["spec"]["selector"], pod_labels(docs, n)) for n in (0, 1))


def health_server() -> tuple[Any, Any, int]:
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, servicer, port


def probe(c: dict[str, Any], name: str, pod: str) -> int:
    """Run the container's exec probe `name` with POD_NAME=`pod` and this venv's python."""
    command = c[name]["exec"]["command"]
    env = {
        **os.environ,
        "POD_NAME": pod,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    return subprocess.run(command, env=env, capture_output=True, check=False, timeout=30).returncode


def test_probes_ask_grpc_health_on_pod_0_only() -> None:
    """The exec probes against a real gRPC health server on the learner's (plaintext) health
    port: pod 0 passes only while it is SERVING; the other pods, which serve nothing, always
    pass."""
    from grpc_health.v1 import health_pb2

    server, servicer, port = health_server()
    try:
        c = container(render(merged(MULTI, {"healthPort": port})), "learner")
        names = ("startupProbe", "readinessProbe", "livenessProbe")
        assert all("grpc" not in c[n] for n in names)
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert [probe(c, n, f"{STS}-0") for n in names] == [0, 0, 0]
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert all(probe(c, n, f"{STS}-0") != 0 for n in names)
        assert [probe(c, n, f"{STS}-1") for n in names] == [0, 0, 0]
    finally:
        server.stop(None)
    assert probe(c, "livenessProbe", f"{STS}-0") != 0  # nothing listening
    assert probe(c, "livenessProbe", f"{STS}-12") == 0


@pytest.mark.parametrize(
    ("learner", "message"),
    [
        ({"nodes": 0}, "/learner/nodes"),
        ({"procsPerNode": 0}, "/learner/procsPerNode"),
        ({"nodes": "two"}, "/learner/nodes"),
        ({"procsPerNode": 1.5}, "/learner/procsPerNode"),
        ({"rendezvousPort": 0}, "/learner/rendezvousPort"),
        ({"shmSizeLimit": "lots"}, "/learner/shmSizeLimit"),
    ],
)
def test_schema_refuses_broken_multi_node_values(learner: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError, match=message):
            chart.validate_schema({"learner": learner})
        with pytest.raises(helm.HelmError):
            chart.render({"learner": learner}, name="sf", namespace="ml")


@pytest.mark.parametrize(
    ("learner", "message"),
    [
        ({"nodes": 2, "procsPerNode": 4, "gpus": 2}, "learner.gpus must be 0, 1 or"),
        ({"nodes": 2, "rendezvousPort": 50051}, "learner.rendezvousPort must differ"),
        ({"nodes": 2, "rendezvousPort": 50052}, "learner.rendezvousPort must differ"),
    ],
)
def test_the_chart_refuses_inconsistent_multi_node_values(
    learner: dict[str, Any], message: str
) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError, match=message):
        chart.render({"learner": learner}, name="sf", namespace="ml")


def test_notes_name_the_serving_pod() -> None:
    with helm.Chart.load(CHART) as chart:
        notes = chart.render(MULTI, name="sf", namespace="ml")["skillfactory/templates/NOTES.txt"]
    assert f"rank 0 on pod {STS}-0 serves" in notes
    assert "2 pod(s) x 4 torchrun process(es)" in notes
    with helm.Chart.load(CHART) as chart:
        notes = chart.render({}, name="sf", namespace="ml")["skillfactory/templates/NOTES.txt"]
    assert "torchrun" not in notes


def test_the_rendered_options_match_the_one_process_learner() -> None:
    """Apart from the launcher, the learner gets the same options with several processes."""
    assert options(container(render(MULTI), "learner")) == options(container(render({}), "learner"))


@pytest.mark.skipif(prometheus_binary() is None, reason="the prometheus binary is missing")
def test_the_bundled_prometheus_scrapes_learner_pod_0_only() -> None:
    """The rendered scrape job (pod discovery replaced by the labels it would attach) through a
    real Prometheus: of the learner's pods only pod 0 is kept; other components are untouched."""
    values = merged({"metrics": {"bundled": {"enabled": True}}}, MULTI["learner"])
    config_map = find(render(values), "ConfigMap", "sf-skillfactory-prometheus")
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    (job,) = config["scrape_configs"]
    job.pop("kubernetes_sd_configs")
    pods = [(f"{STS}-0", "learner"), (f"{STS}-1", "learner"), (f"{STS}-10", "learner")]
    pods.append(("sf-skillfactory-reward-5d8f9-x2", "reward"))
    job["static_configs"] = [
        {
            "targets": [f"127.0.0.1:{port}"],
            "labels": {
                "__meta_kubernetes_namespace": "ml",
                "__meta_kubernetes_pod_name": pod,
                "__meta_kubernetes_pod_label_app_kubernetes_io_component": name,
                "__meta_kubernetes_pod_container_port_name": "metrics",
            },
        }
        for port, (pod, name) in enumerate(pods, start=1)
    ]
    with PrometheusServer(config=config) as prom:
        active, dropped = prom.wait_for_discovery(len(pods))
    assert sorted(t["labels"]["pod"] for t in active) == [f"{STS}-0", pods[3][0]]
    assert len(dropped) == 2
    # One process: the rule is not there.
    one = find(
        render({"metrics": {"bundled": {"enabled": True}}}),
        "ConfigMap",
        config_map["metadata"]["name"],
    )
    assert "learner;" not in one["data"]["prometheus.yml"]
