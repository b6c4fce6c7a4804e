"""Finding 7: `Generate` took any `max_tokens`, kept generating past the client's deadline or
cancel, and a SIGTERM during a long call did not stop the server.

The engine here is the seeded text engine slowed to a fixed time per token (a simulation: each
completion is ~40 tokens, so a call lasts ~40 × the delay unless it is stopped)."""

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

import grpc
import pytest

from skillfactory.engines.base import SamplingParams
from skillfactory.engines.simulated import SeededTextEngine
from skillfactory.rollout.batcher import EngineBatcher
from skillfactory.rollout.engine_slot import EngineSlot
from skillfactory.rollout.limits import GenerationLimits
from skillfactory.serving.rollout import RolloutServicer, setup_rollout_server
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.v1 import data_pb2, rollout_pb2, rollout_pb2_grpc

SLOW_S = 0.25
"""Simulated seconds per token: a full call of ~40 tokens lasts ~10 s."""


@pytest.fixture
def rollout() -> Iterator[tuple[ServiceServer, RolloutServicer, rollout_pb2_grpc.RolloutStub]]:
    server, servicer = setup_rollout_server(
        ServingConfig(port=0, metrics_port=None),
        SeededTextEngine(SLOW_S),
        model="simulated",
        limits=GenerationLimits(max_tokens=1_000, max_n=8, max_prompts=4),
    )
    server.start()
    channel = grpc.insecure_channel(server.address)
    try:
        yield server, servicer, rollout_pb2_grpc.RolloutStub(channel)
    finally:
        channel.close()
        server.stop(0)
        servicer.close()


def request(max_tokens: int = 64, n: int = 1, prompts: int = 1) -> rollout_pb2.GenerateRequest:
    return rollout_pb2.GenerateRequest(
        prompts=[f"What is {i} + 1?" for i in range(prompts)],
        n=n,
        sampling=data_pb2.SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=3),
    )


@pytest.mark.parametrize(
    ("asked", "field"),
    [
        (request(max_tokens=10**9), "max_tokens"),
        (request(n=9), "n 9"),
        (request(prompts=5), "5 prompts"),
    ],
)
def test_a_request_over_the_service_limits_is_refused_naming_the_field(
    rollout: tuple[ServiceServer, RolloutServicer, rollout_pb2_grpc.RolloutStub],
    asked: rollout_pb2.GenerateRequest,
    field: str,
) -> None:
    _, servicer, stub = rollout
    with pytest.raises(grpc.RpcError) as refused:
        stub.Generate(asked, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in str(refused.value.details()) and "limit" in str(refused.value.details())
    with pytest.raises(grpc.RpcError) as streamed:
        next(iter(stub.GenerateStream(asked, timeout=10)))
    assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert servicer.batcher.calls == 0  # nothing reached the engine


def wait_until(condition: object, timeout_s: float) -> float:
    """Seconds until `condition()` held (fails after `timeout_s`)."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout_s, "condition did not hold in time"
        time.sleep(0.02)
    return time.monotonic() - started


def test_generation_stops_when_the_deadline_passes(
    rollout: tuple[ServiceServer, RolloutServicer, rollout_pb2_grpc.RolloutStub],
) -> None:
    _, servicer, stub = rollout
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as late:
        stub.Generate(request(), timeout=1.0)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # the engine call ends within a poll or two of the deadline, not ~10 s later
    wait_until(lambda: servicer.batcher.calls == 1, timeout_s=3.0)
    assert time.monotonic() - started < 4.0


def test_generation_stops_when_the_call_is_cancelled(
    rollout: tuple[ServiceServer, RolloutServicer, rollout_pb2_grpc.RolloutStub],
) -> None:
    _, servicer, stub = rollout
    call = stub.Generate.future(request(), timeout=60)
    time.sleep(0.5)  # in the engine by now
    call.cancel()
    assert wait_until(lambda: servicer.batcher.calls == 1, timeout_s=3.0) < 3.0
    stream = stub.GenerateStream(request(), timeout=60)
    threading.Timer(0.5, stream.cancel).start()
    with pytest.raises(grpc.RpcError):
        list(stream)
    wait_until(lambda: servicer.batcher.calls == 2, timeout_s=3.0)


def test_a_merged_call_goes_on_for_the_caller_still_waiting() -> None:
    """Two works share one engine call; the first abandoned does not cut the second short, and
    once both are abandoned the call stops."""
    batcher = EngineBatcher(EngineSlot(None, SeededTextEngine(SLOW_S / 5), "simulated"))
    try:
        params = SamplingParams(max_tokens=64, seed=3)
        leaving, staying = batcher.submit_all([(["What is 0 + 1?"], None)] * 2, params)
        time.sleep(0.3)
        leaving.abandon()
        (completion,) = staying.future.result(timeout=30)[0]
        alone = SeededTextEngine().generate(["What is 0 + 1?"], params)[0][0]
        assert completion.finish_reason == "stop" and completion.token_ids == alone.token_ids
        assert batcher.calls == 1  # one engine call served both

        first, second = batcher.submit_all([(["What is 0 + 1?"], None)] * 2, params)
        time.sleep(0.3)
        started = time.monotonic()
        first.abandon()
        second.abandon()
        wait_until(lambda: batcher.calls == 2, timeout_s=2.0)
        assert time.monotonic() - started < 1.0  # not the ~1.7 s left of the call
    finally:
        batcher.close()


def test_sigterm_during_a_long_generate_stops_the_server(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "skillfactory.cli", "serve", "rollout", "--model", "simulated",
        "--engine", "simulated", "--simulated-token-delay-ms", "1000", "--port", "0",
        "--metrics-port", "-1", "--grace-seconds", "1",
    ]  # fmt: skip
    stderr = tmp_path / "stderr"
    with stderr.open("w") as sink:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, stderr.read_text()
        channel = grpc.insecure_channel(json.loads(line)["address"])
        call = rollout_pb2_grpc.RolloutStub(channel).Generate.future(request(), timeout=120)
        time.sleep(1.0)  # a ~40 s engine call is under way
        assert not call.done()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)  # 1 s grace, then the call is cancelled and the engine stops
        assert process.returncode == 0, stderr.read_text()[-2000:]
        with pytest.raises(grpc.RpcError):
            call.result(timeout=5)
        channel.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_transformers_engine_stops_between_decode_steps(tiny_model_dir: Path) -> None:
    from skillfactory.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(tiny_model_dir, device="cpu", dtype="float32", compile=False)
    params = SamplingParams(n=2, max_tokens=64, seed=1)
    asked: list[int] = []

    def after_five_checks() -> bool:
        asked.append(1)
        return len(asked) > 5

    cut = engine.generate(["a b c", "d e"], params, should_stop=after_five_checks)
    rows = [c for group in cut for c in group]
    assert "abort" in {c.finish_reason for c in rows} <= {"abort", "stop"}
    assert max(len(c.token_ids) for c in rows) <= 5
    full = engine.generate(["a b c", "d e"], params)
    assert max(len(c.token_ids) for group in full for c in group) > 5
