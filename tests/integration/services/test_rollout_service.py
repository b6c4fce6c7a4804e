"""The rollout service on a real gRPC server on loopback with the tiny model: unary and streaming
generation, weight updates from the weight store (and refused ones), metrics, auth, and
`skillfactory serve rollout` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from skillfactory.engines.base import Completion, Prompt, SamplingParams
from skillfactory.engines.transformers_engine import TransformersEngine
from skillfactory.serving.auth import bearer_metadata
from skillfactory.serving.rollout import (
    RolloutServicer,
    setup_rollout_server,
)
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.v1 import data_pb2, rollout_pb2, rollout_pb2_grpc
from skillfactory.wire.messages import sampling_from_proto, sampling_to_proto
from skillfactory.wire.weight_store import WeightStore

PROMPTS = ["1 + 1 =", "The sky is", "Once upon a time", "abc", "Countdown: 3 4 5"]
SAMPLING = data_pb2.SamplingParams(temperature=1.0, max_tokens=6, seed=7)

Started = tuple[ServiceServer, RolloutServicer, TransformersEngine]


@pytest.fixture
def start_rollout(tiny_model_dir: Path) -> Iterator[Callable[..., Started]]:
    """Starts rollout servers over fresh tiny-model engines; stops them at the end."""
    servers: list[ServiceServer] = []

    def start(max_batch_size: int = 4, **fields: Any) -> Started:
        engine = TransformersEngine(
            tiny_model_dir, device="cpu", compile=False, max_batch_size=max_batch_size
        )
        config = ServingConfig(**{"grace_s": 1.0, "linger_s": 0.0, **fields})
        server, servicer = setup_rollout_server(
            config, engine, model="tiny", max_batch_size=max_batch_size
        )
        server.start()
        servers.append(server)
        return server, servicer, engine

    yield start
    for server in servers:
        server.stop(grace_s=0)


def stub(address: str) -> Any:
    return rollout_pb2_grpc.RolloutStub(grpc.insecure_channel(address))


def _scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def _check_completions(results: Any, n: int, version: int) -> None:
    for completion in (c for r in results for c in r.completions):
        assert len(completion.token_ids) == len(completion.logprobs) > 0
        assert all(lp <= 0 for lp in completion.logprobs)
        assert completion.policy_version == version
        assert completion.prompt_token_ids
        assert completion.finish_reason != data_pb2.FINISH_REASON_UNSPECIFIED
    assert all(len(r.completions) == n for r in results)


def test_generate_returns_n_completions_per_prompt(start_rollout: Callable[..., Started]) -> None:
    server, _, _ = start_rollout()
    request = rollout_pb2.GenerateRequest(prompts=PROMPTS[:3], n=3, sampling=SAMPLING, run_id="r1")
    response = stub(server.address).Generate(request, timeout=30)
    assert [r.prompt_index for r in response.results] == [0, 1, 2]
    assert response.policy_version == 0
    _check_completions(response.results, n=3, version=0)
    chat = rollout_pb2.GenerateRequest(prompts=["hi"], apply_chat_template=True, sampling=SAMPLING)
    (result,) = stub(server.address).Generate(chat, timeout=30).results
    _check_completions([result], n=1, version=0)  # n unset means 1


def test_generate_stream_yields_every_prompt_in_chunks(
    start_rollout: Callable[..., Started],
) -> None:
    server, _, _ = start_rollout(max_batch_size=4)
    request = rollout_pb2.GenerateRequest(prompts=PROMPTS, n=2, sampling=SAMPLING)
    streamed = list(stub(server.address).GenerateStream(request, timeout=30))
    assert sorted(r.prompt_index for r in streamed) == list(range(len(PROMPTS)))
    _check_completions(streamed, n=2, version=0)
    assert server.metrics_url is not None
    samples = _scrape(server.metrics_url)
    assert samples["skillfactory_rollout_batch_rows_count"] == 3  # 2 + 2 + 1 prompts × n=2
    assert samples["skillfactory_rollout_batch_rows_sum"] == 10


def test_bad_sampling_is_invalid_argument(start_rollout: Callable[..., Started]) -> None:
    server, _, _ = start_rollout()
    rollout = stub(server.address)
    for request in (
        rollout_pb2.GenerateRequest(prompts=["a"], n=-1),
        rollout_pb2.GenerateRequest(prompts=["a"], sampling=data_pb2.SamplingParams(top_p=2)),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            rollout.Generate(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as streamed:
            list(rollout.GenerateStream(request, timeout=10))
        assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sampling_params_round_trip() -> None:
    params = sampling_from_proto(SAMPLING, 4)
    assert (params.n, params.temperature, params.max_tokens, params.seed) == (4, 1.0, 6, 7)
    assert (params.top_p, params.repetition_penalty) == (1.0, 1.0)  # unset → defaults
    assert sampling_from_proto(sampling_to_proto(params), 4) == params


def test_update_weights_changes_version_and_weights(
    start_rollout: Callable[..., Started], tmp_path: Path
) -> None:
    server, _, engine = start_rollout()
    rollout = stub(server.address)
    name, parameter = next(iter(engine.model.named_parameters()))
    new_state = {k: v.detach().clone() + 0.5 for k, v in engine.model.state_dict().items()}
    store = WeightStore(tmp_path / "weights", keep=5)
    update = store.publish(new_state, version=1, run_id="r1")

    answer = rollout.UpdateWeights(rollout_pb2.UpdateWeightsRequest(update=update), timeout=30)

    assert answer.policy_version == 1 and answer.load_seconds > 0
    assert torch.equal(parameter.detach(), new_state[name])
    assert rollout.GetPolicyVersion(rollout_pb2.GetPolicyVersionRequest()).policy_version == 1
    request = rollout_pb2.GenerateRequest(prompts=PROMPTS[:2], n=2, sampling=SAMPLING)
    response = rollout.Generate(request, timeout=30)
    assert response.policy_version == 1
    _check_completions(response.results, n=2, version=1)

    stale = rollout.UpdateWeights(
        rollout_pb2.UpdateWeightsRequest(update=data_pb2.WeightUpdate(version=0, uri="/gone")),
        timeout=10,
    )
    assert stale.policy_version == 1 and stale.load_seconds == 0

    tampered = store.publish({k: v + 1 for k, v in new_state.items()}, version=2)
    weights_file = next(Path(tampered.uri.removeprefix("file://")).glob("*.safetensors"))
    data = bytearray(weights_file.read_bytes())
    data[-1] ^= 0xFF
    weights_file.write_bytes(bytes(data))
    pruned = data_pb2.WeightUpdate(version=3, uri=str(tmp_path / "pruned"), checksum="0")
    for notice, message in ((tampered, "checksum"), (pruned, "does not exist")):
        with pytest.raises(grpc.RpcError) as caught:
            rollout.UpdateWeights(rollout_pb2.UpdateWeightsRequest(update=notice), timeout=10)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert message in (caught.value.details() or "")
    assert engine.policy_version == 1
    assert torch.equal(parameter.detach(), new_state[name])

    assert server.metrics_url is not None
    samples = _scrape(server.metrics_url)
    assert samples["skillfactory_rollout_policy_version"] == 1
    assert samples["skillfactory_rollout_weight_sync_seconds_count"] == 1
    assert samples["skillfactory_rollout_weight_sync_failures_total"] == 2
    assert samples["skillfactory_rollout_tokens_generated_total"] > 0
    assert samples["skillfactory_rollout_tokens_per_second"] > 0
    assert samples["skillfactory_rollout_generate_seconds_count"] == 1
    assert samples["skillfactory_rollout_requests_total"] == 1


class HeldEngine(TransformersEngine):
    """The tiny engine whose generate call waits until the test releases it (a long batch)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.release = threading.Event()

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        self.entered.set()
        assert self.release.wait(timeout=20)
        return super().generate(prompts, params)


def test_weights_load_between_requests_not_during_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    engine = HeldEngine(tiny_model_dir, device="cpu", compile=False, max_batch_size=2)
    config = ServingConfig(grace_s=1.0, linger_s=0.0, metrics_port=None)
    server, _ = setup_rollout_server(config, engine, max_batch_size=2)
    server.start()
    try:
        rollout = stub(server.address)
        request = rollout_pb2.GenerateRequest(prompts=PROMPTS, n=1, sampling=SAMPLING)
        generating = rollout.Generate.future(request, timeout=30)  # 3 engine calls
        assert engine.entered.wait(timeout=10)
        state = {k: v.detach().clone() + 0.5 for k, v in engine.model.state_dict().items()}
        update = WeightStore(tmp_path / "weights").publish(state, version=1)
        updating = rollout.UpdateWeights.future(
            rollout_pb2.UpdateWeightsRequest(update=update), timeout=30
        )
        time.sleep(0.3)
        assert not updating.done() and engine.policy_version == 0  # waits for the request
        engine.release.set()
        response = generating.result()
        assert response.policy_version == 0
        _check_completions(response.results, n=1, version=0)  # one version for all chunks
        assert updating.result().policy_version == 1
        assert rollout.Generate(request, timeout=30).policy_version == 1
    finally:
        engine.release.set()
        server.stop(grace_s=0)


def test_token_auth(start_rollout: Callable[..., Started]) -> None:
    server, _, _ = start_rollout(token="secret")
    rollout = stub(server.address)
    request = rollout_pb2.GetPolicyVersionRequest()
    with pytest.raises(grpc.RpcError) as caught:
        rollout.GetPolicyVersion(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    generate = rollout_pb2.GenerateRequest(prompts=["a"], sampling=SAMPLING)
    with pytest.raises(grpc.RpcError) as streamed:
        list(rollout.GenerateStream(generate, timeout=10))
    assert streamed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    answer = rollout.GetPolicyVersion(request, metadata=bearer_metadata("secret"), timeout=10)
    assert answer.policy_version == 0 and answer.model == "tiny"


def test_serve_rollout_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("process-token\n")
    command = [
        sys.executable, "-m", "skillfactory.cli", "serve", "rollout", "--model",
        str(tiny_model_dir), "--port", "0", "--metrics-port", "0", "--token-file",
        str(token_file), "--max-batch-size", "4", "--device", "cpu", "--grace-seconds", "5",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stderr = tmp_path / "stderr"
    with stderr.open("w") as sink:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, stderr.read_text()
        ready = json.loads(line)
        assert ready["service"] == "rollout" and ready["auth"] is True
        request = rollout_pb2.GenerateRequest(prompts=PROMPTS[:2], n=2, sampling=SAMPLING)
        response = stub(ready["address"]).Generate(
            request, metadata=bearer_metadata("process-token"), timeout=30
        )
        _check_completions(response.results, n=2, version=0)
        assert _scrape(ready["metrics"])["skillfactory_rollout_tokens_generated_total"] > 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
