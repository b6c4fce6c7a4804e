"""Issue 15, finding 6: eight watchers starve the learner. Streaming calls have a concurrency limit
of their own (`max_streams`), apart from the threads unary calls use, so with more `WatchRun`
streams open than the server has worker threads, `GetRun` and the gRPC health check still answer
within a second, and the watchers past the limit are told RESOURCE_EXHAUSTED at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skillfactory.contracts.runspec_proto import run_spec_to_proto
from skillfactory.runspec import RunSpec
from skillfactory.serving.learner_api import LearnerServer, setup_learner_server
from skillfactory.serving.run_policy import RunPolicy
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.v1 import learner_pb2, learner_pb2_grpc

WORKERS = 8
WATCHERS = 12


@pytest.fixture
def idle_learner(tmp_path: Path) -> Iterator[LearnerServer]:
    """A learner server whose run controller is not started (stand-in for a long run): a
    submitted run stays PENDING, so every watcher waits on it for good."""
    config = ServingConfig(max_workers=WORKERS, grace_s=0.0, linger_s=0.0)
    server = setup_learner_server(config, tmp_path / "state", policy=RunPolicy(tmp_path))
    ServiceServer.start(server)  # the gRPC server only, not the controller
    yield server
    server.controller.close()
    ServiceServer.stop(server, grace_s=0)


def test_watchers_beyond_the_worker_threads_leave_get_run_and_health_answering(
    idle_learner: LearnerServer,
) -> None:
    channel = grpc.insecure_channel(idle_learner.address)
    stub = learner_pb2_grpc.LearnerStub(channel)
    spec = run_spec_to_proto(RunSpec(name="long", model="HuggingFaceTB/SmolLM2-135M"))
    run_id = stub.SubmitRun(learner_pb2.SubmitRunRequest(spec=spec), timeout=5).run_id

    opened, refused = [], []
    lock = threading.Lock()

    def watch() -> None:
        stream = stub.WatchRun(learner_pb2.WatchRunRequest(run_id=run_id), timeout=60)
        try:
            for _ in stream:
                with lock:
                    opened.append(stream)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
                with lock:
                    refused.append(error)

    threads = [threading.Thread(target=watch, daemon=True) for _ in range(WATCHERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(opened) + len(refused) < WATCHERS and time.monotonic() < deadline:
        time.sleep(0.05)
    limit = idle_learner.config.max_streams
    assert 0 < limit < WATCHERS
    assert len(opened) == limit and len(refused) == WATCHERS - limit

    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(5):
        started = time.monotonic()
        assert stub.GetRun(learner_pb2.GetRunRequest(run_id=run_id), timeout=1).run_id == run_id
        check = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        assert time.monotonic() - started < 1.0

    # A watcher that leaves frees its slot for the next one.
    opened[0].cancel()
    time.sleep(0.3)
    again = stub.WatchRun(learner_pb2.WatchRunRequest(run_id=run_id), timeout=5)
    assert next(again).run_id == run_id
    again.cancel()
    for stream in opened:
        stream.cancel()
    channel.close()
