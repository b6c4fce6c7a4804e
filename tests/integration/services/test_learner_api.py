"""The learner API on a real gRPC server on loopback with a bearer token: a tiny-model run from
SubmitRun to a terminal SUCCEEDED event, metrics, persistence across a restart, cancellation, and
the error codes of bad requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from typer.testing import CliRunner

from skillfactory.cli import app
from skillfactory.contracts.runspec_proto import run_spec_to_proto
from skillfactory.runspec import parse_run_spec
from skillfactory.serving.auth import bearer_metadata
from skillfactory.serving.learner_api import LearnerServer, setup_learner_server
from skillfactory.serving.run_controller import RunController
from skillfactory.serving.run_policy import RunPolicy
from skillfactory.serving.run_store import CANCELLED, PENDING
from skillfactory.serving.server import ServingConfig
from skillfactory.v1 import learner_pb2, learner_pb2_grpc, run_pb2

sys.path.insert(0, str(Path(__file__).parent.parent))
from support.metrics import scrape  # noqa: E402
from test_pipeline import tiny_spec  # noqa: E402

TOKEN = "learner-token"
AUTH = bearer_metadata(TOKEN)


@pytest.fixture
def start_learner() -> Iterator[Callable[[Path], LearnerServer]]:
    servers: list[LearnerServer] = []

    def start(state_dir: Path) -> LearnerServer:
        config = ServingConfig(token=TOKEN, grace_s=1.0, linger_s=0.0)
        policy = RunPolicy(state_dir.parent.parent)  # pytest's base temp: the runs, the model
        server = setup_learner_server(config, state_dir, policy=policy)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace_s=0)


def stub_of(server: LearnerServer) -> learner_pb2_grpc.LearnerStub:
    return learner_pb2_grpc.LearnerStub(grpc.insecure_channel(server.address))


def spec_proto(model: Path, out: Path, **overrides: Any) -> Any:
    return run_spec_to_proto(parse_run_spec(tiny_spec(model, out, **overrides)))


def watch_all(stub: learner_pb2_grpc.LearnerStub, run_id: str, after: int = 0) -> list[Any]:
    request = learner_pb2.WatchRunRequest(run_id=run_id, after_sequence=after)
    return list(stub.WatchRun(request, metadata=AUTH, timeout=120))


def test_a_tiny_run_streams_to_success_reports_metrics_and_survives_a_restart(
    start_learner: Callable[[Path], LearnerServer], tiny_model_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    server = start_learner(state)
    stub = stub_of(server)
    spec = spec_proto(tiny_model_dir, tmp_path / "runs")
    run_id = stub.SubmitRun(learner_pb2.SubmitRunRequest(spec=spec), metadata=AUTH).run_id

    events = watch_all(stub, run_id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    last = events[-1]
    assert last.WhichOneof("kind") == "state" and last.state == run_pb2.RUN_STATE_SUCCEEDED
    assert {e.stage for e in events if e.message == "started"} == {"data", "sft", "grpo", "eval"}
    steps = [e for e in events if e.stage == "grpo" and e.WhichOneof("kind") == "metrics"]
    assert [e.metrics.step for e in steps] == [1, 2, 3]
    assert {"loss", "reward_mean", "learning_rate"} <= set(steps[-1].metrics.values)
    assert any(e.stage == "eval" and e.WhichOneof("kind") == "metrics" for e in events)

    status = stub.GetRun(learner_pb2.GetRunRequest(run_id=run_id), metadata=AUTH)
    assert status.state == run_pb2.RUN_STATE_SUCCEEDED and status.policy_version == 3
    assert [s.stage for s in status.stages] == ["data", "sft", "grpo", "eval"]
    assert all(s.state == run_pb2.RUN_STATE_SUCCEEDED and s.progress == 1.0 for s in status.stages)

    assert server.metrics_url is not None
    metrics = scrape(server.metrics_url)
    assert metrics["skillfactory_learner_step"] == 3
    assert metrics["skillfactory_learner_policy_version"] == 3
    assert metrics["skillfactory_learner_steps_total"] == 3
    assert metrics["skillfactory_learner_samples_trained_total"] > 0
    assert metrics["skillfactory_learner_learning_rate"] > 0
    # a random tiny model scores 0, so every advantage (and the loss) is 0: the series exist
    assert {"skillfactory_learner_loss", "skillfactory_learner_reward_mean"} <= set(metrics)
    assert metrics["skillfactory_learner_runs{state=SUCCEEDED}"] == 1
    assert metrics["skillfactory_learner_weight_sync_seconds_count"] == 3

    # a late watcher gets the events so far (resuming after a sequence too), then the end
    assert watch_all(stub, run_id) == events
    assert watch_all(stub, run_id, after=len(events) - 2) == events[-2:]

    server.stop(grace_s=0)
    restarted = start_learner(state)
    stub = stub_of(restarted)
    listed = stub.ListRuns(learner_pb2.ListRunsRequest(), metadata=AUTH).runs
    assert [(r.run_id, r.state) for r in listed] == [(run_id, run_pb2.RUN_STATE_SUCCEEDED)]
    assert listed[0] == stub.GetRun(learner_pb2.GetRunRequest(run_id=run_id), metadata=AUTH)
    assert watch_all(stub, run_id) == events


def test_cancelling_the_running_run_stops_it_at_its_next_event(
    start_learner: Callable[[Path], LearnerServer], tiny_model_dir: Path, tmp_path: Path
) -> None:
    server = start_learner(tmp_path / "state")
    stub = stub_of(server)
    spec = spec_proto(tiny_model_dir, tmp_path / "runs", stages=["grpo", "eval"])
    run_id = stub.SubmitRun(learner_pb2.SubmitRunRequest(spec=spec), metadata=AUTH).run_id
    request = learner_pb2.WatchRunRequest(run_id=run_id)
    seen = []
    for event in stub.WatchRun(request, metadata=AUTH, timeout=120):
        seen.append(event)
        if event.stage == "grpo" and event.WhichOneof("kind") == "metrics":
            cancel = learner_pb2.CancelRunRequest(run_id=run_id, reason="enough")
            stub.CancelRun(cancel, metadata=AUTH)
    assert seen[-1].state == run_pb2.RUN_STATE_CANCELLED
    status = stub.GetRun(learner_pb2.GetRunRequest(run_id=run_id), metadata=AUTH)
    assert status.state == run_pb2.RUN_STATE_CANCELLED and status.message == "enough"
    grpo = next(s for s in status.stages if s.stage == "grpo")
    assert grpo.state == run_pb2.RUN_STATE_CANCELLED and 0 < grpo.progress < 1
    assert not any(e.message == "started" and e.stage == "eval" for e in seen)


def test_a_server_stopped_mid_run_leaves_it_running_and_the_next_one_resumes_it(
    start_learner: Callable[[Path], LearnerServer], tiny_model_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    server = start_learner(state)
    stub = stub_of(server)
    spec = spec_proto(tiny_model_dir, tmp_path / "runs", stages=["grpo"])
    spec.grpo.steps, spec.grpo.save_steps = 4, 1
    run_id = stub.SubmitRun(learner_pb2.SubmitRunRequest(spec=spec), metadata=AUTH).run_id
    for event in stub.WatchRun(learner_pb2.WatchRunRequest(run_id=run_id), metadata=AUTH):
        if event.WhichOneof("kind") == "metrics":
            break
    server.stop(grace_s=0)  # the run stops at its next step and stays RUNNING
    assert server.controller.get(run_id).state == "RUNNING"

    stub = stub_of(start_learner(state))
    events = watch_all(stub, run_id)
    assert events[-1].state == run_pb2.RUN_STATE_SUCCEEDED
    messages = [e.message for e in events if e.WhichOneof("kind") == "message"]
    assert "interrupted: learner stopped" in messages
    assert "resumed after a learner restart" in messages
    resumed_at = next(e.sequence for e in events if e.message.startswith("resumed"))
    steps = [e.metrics.step for e in events[resumed_at:] if e.WhichOneof("kind") == "metrics"]
    assert steps[-1] == 4 and steps[0] > 1  # resumed from a checkpoint, not from scratch


def test_a_pending_run_is_cancelled_at_once_and_pending_runs_persist(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    spec = parse_run_spec(tiny_spec(tiny_model_dir, tmp_path / "runs"))
    controller = RunController(tmp_path / "state", policy=RunPolicy(tmp_path.parent))  # not started
    first, second = controller.submit(spec), controller.submit(spec)
    assert controller.cancel(first.run_id, "changed my mind").state == CANCELLED
    assert [e.value for e in controller.watch(first.run_id)] == [PENDING, CANCELLED]
    reloaded = RunController(tmp_path / "state")
    assert [(r.run_id, r.state) for r in reloaded.list()] == [
        (first.run_id, CANCELLED),
        (second.run_id, PENDING),
    ]
    assert list(reloaded._queue) == [second.run_id]


def test_bad_requests_get_the_right_codes(
    start_learner: Callable[[Path], LearnerServer], tiny_model_dir: Path, tmp_path: Path
) -> None:
    server = start_learner(tmp_path / "state")
    stub = stub_of(server)
    spec = spec_proto(tiny_model_dir, tmp_path / "runs")
    spec.grpo.max_staleness = -1

    def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        return caught.value.code(), caught.value.details()  # type: ignore[attr-defined]

    code, details = code_of(
        lambda: stub.SubmitRun(learner_pb2.SubmitRunRequest(spec=spec), metadata=AUTH)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "grpo.max_staleness" in details

    oversized = spec_proto(tiny_model_dir, tmp_path / "runs")
    oversized.name = "x" * (int(server.config.max_message_mb * 1024 * 1024) + 1)
    code, details = code_of(
        lambda: stub.SubmitRun(learner_pb2.SubmitRunRequest(spec=oversized), metadata=AUTH)
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details

    listing = learner_pb2.ListRunsRequest()
    assert code_of(lambda: stub.ListRuns(listing))[0] == grpc.StatusCode.UNAUTHENTICATED
    wrong = bearer_metadata("not-the-token")
    assert code_of(lambda: stub.ListRuns(listing, metadata=wrong))[0] == (
        grpc.StatusCode.UNAUTHENTICATED
    )

    unknown = "no-such-run"
    for call in (
        lambda: stub.GetRun(learner_pb2.GetRunRequest(run_id=unknown), metadata=AUTH),
        lambda: stub.CancelRun(learner_pb2.CancelRunRequest(run_id=unknown), metadata=AUTH),
        lambda: list(
            stub.WatchRun(learner_pb2.WatchRunRequest(run_id=unknown), metadata=AUTH, timeout=10)
        ),
    ):
        code, details = code_of(call)
        assert code == grpc.StatusCode.NOT_FOUND and unknown in details
    assert stub.ListRuns(listing, metadata=AUTH).runs == []
    time.sleep(0)  # nothing was queued: the learner stays idle


@pytest.fixture
def learner_processes(tmp_path: Path) -> Iterator[Callable[[Path], dict[str, Any]]]:
    """Starts `skillfactory learner serve` processes; kills what is left at the end."""
    processes: list[subprocess.Popen[str]] = []
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)

    def start(state_dir: Path) -> dict[str, Any]:
        command = [
            sys.executable, "-m", "skillfactory.cli", "learner", "serve", "--state-dir",
            str(state_dir), "--port", "0", "--metrics-port", "0", "--token-file", str(token_file),
            "--data-root", str(tmp_path.parent),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        stderr = tmp_path / f"stderr-{len(processes)}"
        with stderr.open("w") as sink:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=sink, text=True, env=env
            )
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, stderr.read_text()
        return {**json.loads(line), "process": process, "token_file": token_file}

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_a_learner_killed_mid_grpo_resumes_the_run_after_a_restart(
    learner_processes: Callable[[Path], dict[str, Any]], tiny_model_dir: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = learner_processes(state)
    assert first["service"] == "learner" and first["auth"] is True
    spec = tiny_spec(tiny_model_dir, tmp_path / "runs", stages=["grpo"])  # GRPO alone: faster
    spec["grpo"] = {**spec["grpo"], "steps": 6, "save_steps": 2}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    client = ["--learner", first["address"], "--token-file", str(first["token_file"])]
    runner = CliRunner()
    submitted = runner.invoke(app, ["submit", str(spec_file), *client])
    assert submitted.exit_code == 0, submitted.output
    run_id = submitted.output.strip()

    stub = learner_pb2_grpc.LearnerStub(grpc.insecure_channel(first["address"]))
    request = learner_pb2.WatchRunRequest(run_id=run_id)
    for event in stub.WatchRun(request, metadata=AUTH, timeout=120):
        # the step-2 checkpoint is written before the step's event
        if (
            event.stage == "grpo"
            and event.WhichOneof("kind") == "metrics"
            and event.metrics.step >= 2
        ):
            break
    first["process"].kill()
    first["process"].wait()

    second = learner_processes(state)
    client = ["--learner", second["address"], "--token-file", str(first["token_file"])]
    watched = runner.invoke(app, ["watch", run_id, *client])
    assert watched.exit_code == 0, watched.output
    assert "resumed after a learner restart" in watched.output
    assert watched.output.rstrip().endswith("run SUCCEEDED")
    status = runner.invoke(app, ["status", run_id, "--json", *client])
    assert status.exit_code == 0, status.output
    record = json.loads(status.output)
    assert record["state"] == "SUCCEEDED" and record["policy_version"] == 6
    assert record["stages"] == {"grpo": {"state": "SUCCEEDED", "progress": 1.0}}
    run = tmp_path / "runs" / run_id / "tiny"  # the service keys run folders by run id
    summary = json.loads((run / "grpo" / "summary.json").read_text())
    assert summary["resumed_from_version"] in (2, 4) and summary["steps"] == 6
