"""The rollout service as Ray Serve replicas (`skillfactory.serving.ray_rollout`), on a real local
Ray instance with 2 CPUs and the tiny model, called through Ray Serve's gRPC proxy: generation with
logprobs and policy versions, weight updates reaching every replica, the autoscaling config Serve
deployed, 1 → 2 replicas under slow concurrent requests (a simulated engine speed), and
`skillfactory serve rollout-ray` as a real process. Needs the `ray` extra (`make test-ray`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import pytest

pytest.importorskip(
    "ray.serve", reason="needs the ray extra: pip install 'skillfactory[ray]' (make test-ray)"
)

from skillfactory.serving.auth import bearer_metadata  # noqa: E402
from skillfactory.serving.ray_rollout import (  # noqa: E402
    APP_NAME,
    DEPLOYMENT_NAME,
    build_app,
    grpc_options,
)
from skillfactory.v1 import data_pb2, rollout_pb2, rollout_pb2_grpc  # noqa: E402
from skillfactory.wire.weight_store import WeightStore  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

SAMPLING = data_pb2.SamplingParams(temperature=1.0, max_tokens=5, seed=3)
ENGINE = {"type": "transformers", "device": "cpu", "compile": False, "max_batch_size": 4}
# Autoscaling metrics pushed every second (Ray's default: 10 s), so scaling shows within seconds.
FAST_METRICS = {
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
}


def free_port() -> int:
    from skillfactory.cli.serve_ray import free_port as pick

    return pick()


def stub(address: str) -> Any:
    return rollout_pb2_grpc.RolloutStub(grpc.insecure_channel(address))


def check_completions(results: Any, n: int, version: int) -> None:
    assert results and all(len(r.completions) == n for r in results)
    for completion in (c for r in results for c in r.completions):
        assert len(completion.token_ids) == len(completion.logprobs) > 0
        assert all(lp <= 0 for lp in completion.logprobs)
        assert completion.policy_version == version
        assert completion.finish_reason != data_pb2.FINISH_REASON_UNSPECIFIED


def replica_states() -> dict[str, int]:
    from ray import serve

    return dict(serve.status().applications[APP_NAME].deployments[DEPLOYMENT_NAME].replica_states)


REPO = Path(__file__).resolve().parents[3]


def test_app_builder_and_documented_rayservice() -> None:
    """The builder takes Serve's `args` dict (as serveConfigV2 passes it), sets the asked
    autoscaling, refuses inconsistent bounds; the RayService in docs/ray-rollout.md carries a
    Serve config that Ray and our arguments accept. No Ray instance needed."""
    import yaml
    from pydantic import ValidationError
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    from skillfactory.serving.ray_rollout import SERVICER_FUNCTION, RayRolloutArgs, app

    built = call_user_app_builder_with_args_if_necessary(
        app, {"model": "m", "autoscaling": {"max_replicas": 3, "target_ongoing_requests": 1.5}}
    )
    deployment = built._bound_deployment  # what Serve deploys
    assert deployment.name == DEPLOYMENT_NAME and deployment.max_ongoing_requests == 4
    autoscaling = deployment._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (1, 3)
    assert autoscaling.target_ongoing_requests == 1.5
    for bad in ({"min_replicas": 3, "max_replicas": 2}, {"max_ongoing_requests": 1}):
        with pytest.raises(ValidationError):
            build_app({"model": "m", "autoscaling": bad})

    text = (REPO / "docs" / "ray-rollout.md").read_text()
    manifest = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert manifest["kind"] == "RayService"
    serve_config = ServeDeploySchema.model_validate(
        yaml.safe_load(manifest["spec"]["serveConfigV2"])
    )
    assert serve_config.grpc_options.grpc_servicer_functions == [SERVICER_FUNCTION]
    (application,) = serve_config.applications
    assert application.import_path == "skillfactory.serving.ray_rollout:app"
    assert application.route_prefix  # the gRPC proxy routes only to apps with one
    RayRolloutArgs.model_validate(application.args)
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in head["containers"][0]["ports"]}
    assert ports["serve"] == serve_config.grpc_options.port


def ready_line(stdout: IO[str], stderr: Path) -> dict[str, Any]:
    """The CLI's JSON ready line; Ray's own log lines (the driver prints its raylets' messages,
    e.g. about a Serve controller of an instance shutting down) may come before it."""
    for _ in range(50):
        line = stdout.readline()
        assert line, stderr.read_text()[-3000:]
        if line.startswith("{"):
            return dict(json.loads(line))
    raise AssertionError("no JSON ready line in the first 50 lines of stdout")


def test_serve_rollout_ray_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The CLI starts Ray and Serve, prints its ready line, serves with a token, stops on SIGTERM.
    (First in the module: its Ray instance is gone before the fixture's starts.)"""
    token_file = tmp_path / "token"
    token_file.write_text("ray-token\n")
    command = [
        sys.executable, "-m", "skillfactory.cli", "serve", "rollout-ray", "--model",
        str(tiny_model_dir), "--num-cpus", "2", "--device", "cpu", "--no-compile",
        "--max-batch-size", "4", "--token-file", str(token_file), "--max-replicas", "2",
        "--target-ongoing-requests", "2", "--upscale-delay-s", "5",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stderr = tmp_path / "stderr"
    with stderr.open("w") as sink:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, text=True, env=env)
    try:
        assert process.stdout is not None
        ready = ready_line(process.stdout, stderr)
        assert ready["service"] == "rollout-ray" and ready["auth"] is True
        assert ready["application"] == APP_NAME
        assert ready["autoscaling"]["max_replicas"] == 2
        assert ready["autoscaling"]["target_ongoing_requests"] == 2
        assert ready["autoscaling"]["upscale_delay_s"] == 5
        rollout = stub(ready["address"])
        token = bearer_metadata("ray-token")
        request = rollout_pb2.GenerateRequest(prompts=["1 + 1 =", "abc"], n=2, sampling=SAMPLING)
        response = rollout.Generate(request, metadata=token, timeout=60)
        assert response.policy_version == 0
        check_completions(response.results, n=2, version=0)
        answer = rollout.GetPolicyVersion(
            rollout_pb2.GetPolicyVersionRequest(), metadata=token, timeout=30
        )
        assert answer.policy_version == 0 and answer.model == str(tiny_model_dir)
        for wrong in ((), bearer_metadata("nope")):
            with pytest.raises(grpc.RpcError) as caught:
                rollout.Generate(request, metadata=wrong, timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as streamed:
                list(rollout.GenerateStream(request, metadata=wrong, timeout=30))
            assert streamed.value.code() == grpc.StatusCode.UNAUTHENTICATED
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, stderr.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="module")
def serve_port() -> Iterator[int]:
    """A local Ray instance (2 CPUs) with Serve's gRPC proxy routing the Rollout RPCs."""
    import ray
    from ray import serve

    saved = {key: os.environ.get(key) for key in FAST_METRICS}
    os.environ.update(FAST_METRICS)
    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(grpc_options=grpc_options(port), http_options={"port": free_port()})
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def deploy(args: dict[str, Any]) -> None:
    from ray import serve

    serve.run(build_app(args), name=APP_NAME, route_prefix=f"/{APP_NAME}")


def test_generate_weights_and_autoscaling_config(
    serve_port: int, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from ray.serve.context import _get_global_client

    from skillfactory.engines.transformers_engine import TransformersEngine

    autoscaling = {
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": 2.0,
        "max_ongoing_requests": 3,
        "upscale_delay_s": 1.0,
        "downscale_delay_s": 60.0,
        "look_back_period_s": 15.0,
    }
    deploy({"model": str(tiny_model_dir), "engine": ENGINE, "autoscaling": autoscaling})
    rollout = stub(f"127.0.0.1:{serve_port}")

    request = rollout_pb2.GenerateRequest(prompts=["1 + 1 =", "The sky is", "abc"], n=2)
    request.sampling.CopyFrom(SAMPLING)
    response = rollout.Generate(request, timeout=60)
    assert [r.prompt_index for r in response.results] == [0, 1, 2]
    assert response.policy_version == 0
    check_completions(response.results, n=2, version=0)
    streamed = list(rollout.GenerateStream(request, timeout=60))
    assert sorted(r.prompt_index for r in streamed) == [0, 1, 2]
    check_completions(streamed, n=2, version=0)
    answer = rollout.GetPolicyVersion(rollout_pb2.GetPolicyVersionRequest(), timeout=30)
    assert answer.policy_version == 0 and answer.model == str(tiny_model_dir)

    bad = rollout_pb2.GenerateRequest(prompts=["a"], n=-1)
    with pytest.raises(grpc.RpcError) as caught:
        rollout.Generate(bad, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught_stream:
        list(rollout.GenerateStream(bad, timeout=30))
    assert caught_stream.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # The deployment runs with the autoscaling that was asked for.
    details = _get_global_client().get_serve_details()  # what `serve status -v` shows
    deployed = details["applications"][APP_NAME]["deployments"][DEPLOYMENT_NAME]
    config = deployed["deployment_config"]
    assert config["max_ongoing_requests"] == 3
    asked = {k: v for k, v in autoscaling.items() if k != "max_ongoing_requests"}
    assert {k: config["autoscaling_config"][k] for k in asked} == asked
    assert replica_states() == {"RUNNING": 1}

    # A published version: the replica verifies and loads it; a torn one is refused.
    state = TransformersEngine(tiny_model_dir, device="cpu", compile=False).model.state_dict()
    store = WeightStore(tmp_path / "weights")
    update = store.publish({k: v + 0.25 for k, v in state.items()}, version=1, run_id="r1")
    loaded = rollout.UpdateWeights(rollout_pb2.UpdateWeightsRequest(update=update), timeout=60)
    assert loaded.policy_version == 1 and loaded.load_seconds > 0
    response = rollout.Generate(request, timeout=60)
    assert response.policy_version == 1
    check_completions(response.results, n=2, version=1)
    assert rollout.GetPolicyVersion(rollout_pb2.GetPolicyVersionRequest()).policy_version == 1
    torn = data_pb2.WeightUpdate(version=2, uri=str(tmp_path / "gone"), checksum="0")
    with pytest.raises(grpc.RpcError) as refused:
        rollout.UpdateWeights(rollout_pb2.UpdateWeightsRequest(update=torn), timeout=30)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "does not exist" in (refused.value.details() or "")


def test_slow_requests_scale_to_two_replicas_that_share_weights(
    serve_port: int, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Concurrent slow requests (a simulated 100 ms per decode step) push the ongoing requests
    above the target: Serve adds the second replica, which catches up to the version the first
    one loaded before answering."""
    from skillfactory.engines.transformers_engine import TransformersEngine

    args = {
        "model": str(tiny_model_dir),
        "engine": ENGINE,
        "simulated_token_delay_ms": 100.0,
        "autoscaling": {
            "min_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 1.0,
            "max_ongoing_requests": 4,
            "upscale_delay_s": 0.5,
            "downscale_delay_s": 60.0,
            "look_back_period_s": 10.5,
        },
    }
    deploy(args)
    assert replica_states() == {"RUNNING": 1}
    rollout = stub(f"127.0.0.1:{serve_port}")
    # A new deployment starts from its model, not from the previous one's version 1.
    assert rollout.GetPolicyVersion(rollout_pb2.GetPolicyVersionRequest()).policy_version == 0
    state = TransformersEngine(tiny_model_dir, device="cpu", compile=False).model.state_dict()
    update = WeightStore(tmp_path / "weights").publish(
        {k: v - 0.25 for k, v in state.items()}, version=3
    )
    assert (
        rollout.UpdateWeights(rollout_pb2.UpdateWeightsRequest(update=update)).policy_version == 3
    )

    request = rollout_pb2.GenerateRequest(prompts=["abc"], n=1)
    request.sampling.CopyFrom(data_pb2.SamplingParams(max_tokens=8, seed=1))
    stop = threading.Event()
    versions: list[int] = []
    errors: list[BaseException] = []

    def client() -> None:
        while not stop.is_set():
            try:
                versions.append(rollout.Generate(request, timeout=60).policy_version)
            except grpc.RpcError as error:  # pragma: no cover - reported below
                errors.append(error)
                return

    threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    try:
        decided = None
        while time.monotonic() - started < 90 and replica_states().get("RUNNING", 0) < 2:
            if decided is None and sum(replica_states().values()) > 1:
                decided = time.monotonic() - started
            time.sleep(0.5)
        scaled_after = time.monotonic() - started
        assert replica_states().get("RUNNING", 0) == 2, replica_states()
        served = len(versions)
        time.sleep(3)  # requests reach the new replica too
        assert len(versions) > served
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not errors, errors
    assert set(versions) == {3}  # every replica sampled with the newest weights
    print(f"2nd replica asked for after {decided} s, running after {scaled_after:.1f} s")
