"""The chart's pods, run: render the chart, run every Deployment's and StatefulSet's container as a
local process (command, args, environment, Secrets and volumes as rendered; Services' names mapped
to loopback ports: `tests/support/pods.py` says what stands in for a node and why), then do what
the kubelet and Prometheus would: run each declared startup, readiness and liveness probe against
this machine's non-loopback address (the pod IP) and scrape each declared metrics port there.
Finally a submitter reaches the learner API through its Service with the credentials the chart
generated.

Stand-ins beyond the node's: the rollout pods' engine is `--engine=simulated` instead of vLLM (no
GPU here; the simulated engine is `skillfactory up --engine simulated`'s: text a function of prompt
and seed, no model), and every process gets OMP_NUM_THREADS=1 (2 cores)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from skillfactory.serving.auth import bearer_metadata
from skillfactory.v1 import (
    composer_pb2,
    composer_pb2_grpc,
    learner_pb2,
    learner_pb2_grpc,
    reward_pb2,
    reward_pb2_grpc,
)

from .test_chart import SERVICES, render

sys.path.insert(0, str(Path(__file__).parents[1]))
from support.pods import Cluster, free_port, host_address  # noqa: E402

NAMESPACE = "ml"
READY_TIMEOUT_S = 240.0
"""Learner and rollouts import torch; four Python services start together on 2 cores."""


def emulation_values() -> dict[str, Any]:
    """Ports free on this machine, distinct per component (each pod would have its own)."""
    values: dict[str, Any] = {
        name: {"port": free_port(), "metricsPort": free_port(), "healthPort": free_port()}
        for name in SERVICES
    }
    values["rollout"]["replicas"] = 1
    values["redis"] = {"port": free_port()}
    return values


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    host_ip = host_address()
    if host_ip is None:
        pytest.skip("this machine has no non-loopback address to stand in for a pod IP")
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server is not installed (scripts/install-os-packages.sh)")
    docs = render(emulation_values())
    running = Cluster(docs, tmp_path_factory.mktemp("pods"), host_ip, NAMESPACE)
    rollout = running.pod("rollout").container
    rollout["args"] = [
        "--engine=simulated" if a.startswith("--engine=") else a for a in rollout["args"]
    ]
    extra = {"OMP_NUM_THREADS": "1"}
    try:
        redis = running.pod("redis")  # first: the services need it (a kubelet would restart them)
        running.start(redis, extra)
        running.wait_ready(redis, 30)
        for pod in running.pods:
            if pod is not redis:
                running.start(pod, extra)
        for pod in running.pods:
            running.wait_ready(pod, READY_TIMEOUT_S)
        yield running
    finally:
        for pod in running.pods:
            running.stop(pod)


def test_every_pod_starts_and_passes_its_probes(cluster: Cluster) -> None:
    assert {p.component for p in cluster.pods} == SERVICES | {"redis"}
    for pod in cluster.pods:
        for kind in ("readinessProbe", "livenessProbe"):
            passed, why = cluster.probe(pod, pod.container[kind])
            assert passed, (pod.name, kind, why)


def test_prometheus_scrapes_every_declared_metrics_port_on_the_pod_address(
    cluster: Cluster,
) -> None:
    for pod in cluster.pods:
        if pod.component == "redis":
            continue
        annotations = pod.workload["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations["prometheus.io/port"] == str(pod.ports["metrics"]), pod.name
        bodies = cluster.scrape(pod)
        assert list(bodies) == [pod.ports["metrics"]], pod.name
        assert "skillfactory_grpc_requests" in bodies[pod.ports["metrics"]], pod.name


def learner_credentials(cluster: Cluster) -> tuple[str, grpc.ChannelCredentials | None]:
    """The token a submitter reads from the chart's Secret and the CA to trust (NOTES.txt)."""
    token = cluster.secret("sf-skillfactory-tokens")["submitter"].decode()
    ca = cluster.secret("sf-skillfactory-learner-tls")["ca.crt"]
    return token, grpc.ssl_channel_credentials(root_certificates=ca)


def test_a_submitter_reaches_the_learner_through_its_service(cluster: Cluster) -> None:
    learner = cluster.pod("learner")
    address = cluster.localize(learner, f"sf-skillfactory-learner:{learner.ports['grpc']}")
    token, credentials = learner_credentials(cluster)
    channel = (
        grpc.secure_channel(address, credentials)
        if credentials is not None
        else grpc.insecure_channel(address)
    )
    stub = learner_pb2_grpc.LearnerStub(channel)
    assert (
        stub.ListRuns(
            learner_pb2.ListRunsRequest(), metadata=bearer_metadata(token), timeout=10
        ).runs
        == []
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.ListRuns(learner_pb2.ListRunsRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_each_grpc_hop_verifies_tls_and_sends_a_token_its_callee_accepts(cluster: Cluster) -> None:
    """Learner → composer and rollout → reward, with the caller's own mounted token and CA,
    checked against the callee's Service name as its client dials it."""
    for caller, callee, stub_class, method, request in (
        (
            "learner",
            "composer",
            composer_pb2_grpc.ComposerStub,
            "Compose",
            composer_pb2.ComposeRequest(),
        ),
        (
            "rollout",
            "reward",
            reward_pb2_grpc.RewardServiceStub,
            "Score",
            reward_pb2.ScoreRequest(),
        ),
    ):
        pod, target = cluster.pod(caller), cluster.pod(callee)
        option = next(a for a in cluster.command(pod) if a.startswith(f"--{callee}="))
        address = option.split("=", 1)[1]  # the Service, mapped to loopback
        service = f"sf-skillfactory-{callee}"
        assert address == cluster.localize(target, f"{service}:{target.ports['grpc']}")
        ca = (pod.folders["/var/run/skillfactory/tls"] / "ca.crt").read_bytes()
        token = (pod.folders["/var/run/skillfactory/client"] / "token").read_text()
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
        # Verify the certificate for the Service's name, as the caller's channel does in a cluster.
        options = [("grpc.ssl_target_name_override", service)]
        with grpc.secure_channel(address, credentials, options=options) as channel:
            call = getattr(stub_class(channel), method)
            call(request, metadata=bearer_metadata(token), timeout=10)
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        with grpc.insecure_channel(address) as plaintext, pytest.raises(grpc.RpcError):
            getattr(stub_class(plaintext), method)(
                request, metadata=bearer_metadata(token), timeout=5
            )


def test_only_the_learner_pod_holds_a_token_that_may_submit_or_cancel(cluster: Cluster) -> None:
    """Every token any pod mounts, tried on SubmitRun and CancelRun: only those the learner
    accepts (its tokens folder: admin, submitter) get past auth (then INVALID_ARGUMENT for the
    empty spec, NOT_FOUND for the unknown run)."""
    learner = cluster.pod("learner")
    address = cluster.localize(learner, f"sf-skillfactory-learner:{learner.ports['grpc']}")
    _, credentials = learner_credentials(cluster)
    assert credentials is not None
    held = [
        (pod, mount, path.read_text().strip())
        for pod in cluster.pods
        for mount, folder in pod.folders.items()
        if mount.startswith("/var/run/skillfactory/") and not mount.endswith("/tls")
        for path in files_in(folder)
    ]
    assert {pod.component for pod, _, _ in held} == SERVICES
    with grpc.secure_channel(address, credentials) as channel:
        stub = learner_pb2_grpc.LearnerStub(channel)
        for pod, mount, token in held:
            may = pod is learner and mount == "/var/run/skillfactory/tokens"
            metadata = bearer_metadata(token)
            for call, passed in (
                (stub.SubmitRun, learner_pb2.SubmitRunRequest()),
                (stub.CancelRun, learner_pb2.CancelRunRequest(run_id="none")),
            ):
                with pytest.raises(grpc.RpcError) as answer:
                    call(passed, metadata=metadata, timeout=10)
                code = answer.value.code()  # type: ignore[attr-defined]
                past_auth = code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
                assert past_auth == may, (pod.name, mount, code)
