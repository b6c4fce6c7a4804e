"""`skillfactory serve reward` as a real process: the ready line, auth from a token file, and a
graceful SIGTERM that reports NOT_SERVING, finishes the call in flight and exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from service_records import reward_stub, scored_items

from skillfactory.serving.auth import bearer_metadata
from skillfactory.v1 import reward_pb2

TOKEN = "process-token"
DRAIN_S = 0.5
BATCH = 160_000
"""Items of the batch in flight at SIGTERM (500 problems repeated): grading it takes well past the
drain (~2 s at 80k answers/s), so the server is already refusing new calls while it finishes."""


@pytest.fixture
def reward_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    command = [
        sys.executable, "-m", "skillfactory.cli", "serve", "reward", "--port", "0",
        "--metrics-port", "0", "--token-file", str(token_file), "--max-message-mb", "128",
        "--drain-seconds", str(DRAIN_S), "--grace-seconds", "20",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stderr = tmp_path / "stderr"
    with stderr.open("w") as sink:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, stderr.read_text()
        yield process, {**json.loads(line), "stderr": stderr}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _in_flight(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "skillfactory_grpc_in_flight"
    )


def test_sigterm_finishes_the_call_in_flight_and_exits_zero(
    reward_process: tuple[subprocess.Popen[str], dict[str, Any]],
) -> None:
    process, ready = reward_process
    assert ready["service"] == "reward" and ready["auth"] is True and ready["tls"] is False
    assert ready["address"].startswith("127.0.0.1:") and ready["metrics"].startswith("http://")
    stub = reward_stub(ready["address"], max_message_mb=128)
    small = reward_pb2.ScoreRequest(items=scored_items("countdown-3", 1))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Score(small, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    batch = reward_pb2.ScoreRequest(items=scored_items("countdown-4", 500) * (BATCH // 500))
    future = stub.Score.future(batch, metadata=bearer_metadata(TOKEN), timeout=60)
    deadline = time.monotonic() + 20
    while _in_flight(ready["metrics"]) < 1:
        assert not future.done() and time.monotonic() < deadline, "the batch never was in flight"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(ready["address"]))
    statuses = [health.Check(health_pb2.HealthCheckRequest(), timeout=5).status]
    while statuses[-1] == health_pb2.HealthCheckResponse.SERVING and len(statuses) < 50:
        time.sleep(0.02)  # until the signal handler has run; the drain lasts DRAIN_S
        statuses.append(health.Check(health_pb2.HealthCheckRequest(), timeout=5).status)
    assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
    time.sleep(max(0.0, signalled + DRAIN_S + 0.3 - time.monotonic()))
    assert not future.done(), "the batch ended during the drain; make it larger"
    with pytest.raises(grpc.RpcError) as refused:  # stopped accepting, still finishing the batch
        stub.Score(small, metadata=bearer_metadata(TOKEN), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    response = future.result()
    assert len(response.rewards) == BATCH and all(r.value == 1 for r in response.rewards)
    assert process.wait(timeout=30) == 0
    logs = [json.loads(line) for line in ready["stderr"].read_text().splitlines()]
    assert all(entry["service"] == "reward" and entry["ts"] for entry in logs)
    messages = [entry["msg"] for entry in logs]
    assert messages.index("shutting down") < messages.index("stopped")


def test_the_service_entrypoint_and_bad_options(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    entry = subprocess.run(
        [sys.executable, str(root / "services" / "reward"), "--help"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert entry.returncode == 0 and "--token-file" in entry.stdout
    half_tls = subprocess.run(
        [sys.executable, "-m", "skillfactory.cli", "serve", "reward",
         "--tls-cert", str(tmp_path / "cert.pem")],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert half_tls.returncode == 2 and "certificate and a key" in half_tls.stderr
    assert half_tls.stdout == ""
