"""The distributed mode for real: `skillfactory up` (a supervisor running redis-server and the
reward, composer, learner and two rollout services as processes on loopback), runs submitted
through the learner API, and faults injected with SIGKILL.

The rollout services use a *simulated* engine speed (`--simulated-token-delay-ms`: every engine
call lasts at least 40 ms per decode step) so that sampling, not the tiny model, sets the pace and
a sampler is almost always holding a task when it is killed. The model is the tiny model trained
for a few seconds to answer CommonsenseQA with a random letter (`tests.support.letter_model`),
so rewards, advantages and losses are not all 0.

Every-prompt-once is checked against the learner's own step log: each prompt index (`p<i>`)
appears once across the kept steps, and the number of trained groups is steps × prompts per step.
Since the run's admission is capped at exactly that many prompts, a rollout task lost with a
killed sampler would stall the run: completing proves it was reclaimed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from skillfactory.cluster.local import ClusterState
from skillfactory.contracts.runspec_proto import run_spec_to_proto
from skillfactory.runspec import parse_run_spec
from skillfactory.serving.auth import bearer_metadata
from skillfactory.v1 import learner_pb2, learner_pb2_grpc, rollout_pb2, rollout_pb2_grpc, run_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from support.letter_model import answer_letter_model  # noqa: E402
from support.metrics import scrape  # noqa: E402

pytestmark = pytest.mark.skipif(
    not any(Path(p, "redis-server").exists() for p in os.environ.get("PATH", "").split(":")),
    reason="redis-server is not installed (scripts/install-os-packages.sh)",
)

CLI = [sys.executable, "-m", "skillfactory.cli"]
SUCCEEDED = run_pb2.RUN_STATE_SUCCEEDED
TERMINAL = {SUCCEEDED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED}


@pytest.fixture(scope="module")
def letter_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return answer_letter_model(tiny_model_dir, tmp_path_factory.mktemp("letter-model"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    folder = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = subprocess.run(
        [
            *CLI,
            "up",
            "--dir",
            str(folder),
            "--samplers",
            "2",
            "--claim-idle-ms",
            "3000",
            "--simulated-token-delay-ms",
            "40",
            "--data-root",
            str(tmp_path_factory.getbasetemp()),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    assert "learner:" in started.stdout and "token:" in started.stdout
    try:
        yield ClusterState.load(folder)
    finally:
        stopped = subprocess.run(
            [*CLI, "down", "--dir", str(folder)], capture_output=True, text=True, timeout=180
        )
        assert stopped.returncode == 0, stopped.stderr


class Learner:
    """A client of the cluster's learner with its token."""

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.auth = bearer_metadata(Path(state.token_file).read_text().strip())
        self.stub = learner_pb2_grpc.LearnerStub(grpc.insecure_channel(state.learner))

    def submit(self, spec: dict[str, Any]) -> str:
        request = learner_pb2.SubmitRunRequest(spec=run_spec_to_proto(parse_run_spec(spec)))
        return str(self.stub.SubmitRun(request, metadata=self.auth, timeout=30).run_id)

    def events(self, run_id: str, after: int = 0) -> Iterator[Any]:
        request = learner_pb2.WatchRunRequest(run_id=run_id, after_sequence=after)
        yield from self.stub.WatchRun(request, metadata=self.auth, timeout=600)

    def wait_for_step(self, run_id: str, version: int) -> None:
        for event in self.events(run_id):
            grpo_step = event.WhichOneof("kind") == "metrics" and event.stage == "grpo"
            if grpo_step and event.metrics.step >= version:
                return
            assert event.state not in TERMINAL, f"run ended before step {version}"

    def wait_until_done(self, run_id: str, timeout_s: float = 600) -> Any:
        """Poll GetRun (survives a learner restart) until the run is terminal."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                status = self.stub.GetRun(
                    learner_pb2.GetRunRequest(run_id=run_id), metadata=self.auth, timeout=10
                )
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            else:
                if status.state in TERMINAL:
                    return status
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} not done in {timeout_s} s")


def letter_chats(path: Path) -> Path:
    chats = [
        {
            "messages": [
                {"role": "user", "content": "Which letter? (A) yes (B) no"},
                {"role": "assistant", "content": f"<answer>{letter}</answer>"},
            ]
        }
        for letter in "ABCDE"
    ]
    path.write_text("".join(json.dumps(c) + "\n" for c in chats))
    return path


def run_spec(name: str, model: Path, out: Path, **grpo: Any) -> dict[str, Any]:
    """A GRPO-only run on CommonsenseQA (plus whatever the caller changes)."""
    return {
        "name": name,
        "model": str(model),
        "output_dir": str(out),
        "stages": ["grpo"],
        "engine": {"type": "transformers", "max_batch_size": 64},
        "grpo": {
            "task": "csqa",
            "num_problems": 40,
            "steps": 6,
            "group_size": 4,
            "prompts_per_step": 2,
            "mini_batch_size": 2,
            "max_staleness": 2,
            "learning_rate": 1e-3,
            "max_response_length": 8,
            "save_steps": 2,
            **grpo,
        },
    }


def total(state: ClusterState, prefix: str, series: str) -> float:
    """Sum of a series over the processes whose name starts with `prefix`."""
    return sum(
        scrape(url).get(series, 0.0)
        for name, url in state.metrics_urls().items()
        if name.startswith(prefix)
    )


def run_folder(out: Path, name: str) -> Path:
    """The folder of the run called `name` under `out` (the service keys them by run id)."""
    (folder,) = out.glob(f"*/{name}")
    return folder


def kept_steps(out: Path, name: str) -> list[dict[str, Any]]:
    lines = (run_folder(out, name) / "grpo" / "steps.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def assert_every_prompt_trained_once(
    steps: list[dict[str, Any]], count: int, per_step: int
) -> None:
    assert [s["version"] for s in steps] == list(range(1, count + 1))
    trained = [group for s in steps for group in s["group_ids"]]
    assert len(trained) == count * per_step
    assert len(set(trained)) == len(trained), "a prompt was trained on twice"


def test_a_run_through_the_api_completes_every_stage_with_metrics(
    cluster: ClusterState, letter_model: Path, tmp_path: Path
) -> None:
    learner = Learner(cluster)
    spec = run_spec("full", letter_model, tmp_path, steps=4, group_size=8)
    spec["stages"] = ["data", "sft", "grpo", "eval"]
    spec["data"] = {
        "task": "csqa",
        "num_problems": 2,
        "samples_per_variant": 1,
        "reflections_per_sample": 1,
        "sampling": {"max_tokens": 8},
        "reflection_sampling": {"max_tokens": 8},
    }
    spec["sft"] = {
        "dataset": str(letter_chats(tmp_path / "chats.jsonl")),
        "num_epochs": 1,
        "learning_rate": 1e-5,
        "max_length": 256,
    }
    spec["eval"] = {"tasks": ["csqa"], "num_problems": 2, "samples_per_problem": 2, "max_tokens": 8}
    run_id = learner.submit(spec)

    events = list(learner.events(run_id))
    assert events[-1].WhichOneof("kind") == "state" and events[-1].state == SUCCEEDED
    finished = {e.stage for e in events if e.message.startswith("finished")}
    assert finished == {"data", "sft", "grpo", "eval"}
    steps = [e.metrics.values for e in events if e.stage == "grpo" and e.metrics.values]
    assert len(steps) == 4
    assert any(s["reward_mean"] > 0 for s in steps)
    assert any(s["loss"] != 0 for s in steps)
    assert_every_prompt_trained_once(kept_steps(tmp_path, "full"), 4, 2)

    learner_metrics = scrape(cluster.metrics_urls()["learner"])
    assert learner_metrics["skillfactory_learner_policy_version"] == 4
    assert learner_metrics["skillfactory_learner_samples_trained_total"] >= 4 * 2 * 8
    assert learner_metrics["skillfactory_learner_staleness_count"] >= 4 * 2 * 8
    assert learner_metrics["skillfactory_learner_weight_sync_seconds_count"] >= 4
    assert learner_metrics["skillfactory_learner_step_seconds_count"] >= 4
    assert learner_metrics["skillfactory_learner_learning_rate"] > 0
    assert learner_metrics["skillfactory_learner_grad_norm"] >= 0
    for name in ("loss", "reward_mean", "kl"):
        assert f"skillfactory_learner_{name}" in learner_metrics
    for stream in ("groups", "prompts"):
        assert f"skillfactory_queue_depth{{stream={stream}}}" in learner_metrics
        assert f"skillfactory_queue_pending{{stream={stream}}}" in learner_metrics
    for reason in ("stale", "zero_variance"):
        assert f"skillfactory_learner_dropped_groups{{reason={reason}}}" in learner_metrics
    assert learner_metrics["skillfactory_learner_runs{state=SUCCEEDED}"] >= 1

    assert total(cluster, "rollout", "skillfactory_rollout_tokens_generated_total") > 0
    assert total(cluster, "rollout", "skillfactory_rollout_generate_seconds_count") > 0
    assert total(cluster, "rollout", "skillfactory_rollout_tokens_per_second") > 0
    # the samplers loaded the learner's versions (then eval rebuilt the engines on its models)
    assert total(cluster, "rollout", "skillfactory_rollout_weight_sync_seconds_count") > 0
    generation = "skillfactory_rollout_requests_total{method=generation}"
    assert total(cluster, "rollout", generation) > 0  # stage 1 and eval ran on the rollouts
    assert total(cluster, "rollout", "skillfactory_sampler_groups_pushed_total") >= 8
    assert total(cluster, "rollout", "skillfactory_sampler_reward_seconds_count") > 0
    reward = scrape(cluster.metrics_urls()["reward"])
    assert reward["skillfactory_reward_answers_graded_total{task=csqa}"] >= 4 * 2 * 8
    assert reward["skillfactory_reward_answers_correct_total{task=csqa}"] > 0
    assert any(
        k.startswith("skillfactory_grpc_requests_total") and v > 0 for k, v in reward.items()
    )


def test_a_sampler_killed_mid_grpo_loses_no_prompt_and_none_is_trained_twice(
    cluster: ClusterState, letter_model: Path, tmp_path: Path
) -> None:
    learner = Learner(cluster)
    run_id = learner.submit(run_spec("kill-sampler", letter_model, tmp_path, steps=10))
    learner.wait_for_step(run_id, 1)
    victim = ClusterState.load(Path(cluster.dir)).processes["rollout-0"]
    os.kill(victim.pid, signal.SIGKILL)

    status = learner.wait_until_done(run_id)
    assert status.state == SUCCEEDED, status.message
    assert_every_prompt_trained_once(kept_steps(tmp_path, "kill-sampler"), 10, 2)
    after = ClusterState.load(Path(cluster.dir))
    assert after.processes["rollout-0"].restarts >= 1
    assert after.processes["rollout-0"].pid != victim.pid
    assert total(after, "rollout", "skillfactory_sampler_tasks_reclaimed_total") >= 1


def test_a_learner_killed_mid_grpo_restarts_and_resumes_with_version_continuity(
    cluster: ClusterState, letter_model: Path, tmp_path: Path
) -> None:
    learner = Learner(cluster)
    run_id = learner.submit(run_spec("kill-learner", letter_model, tmp_path, steps=8))
    learner.wait_for_step(run_id, 3)
    victim = ClusterState.load(Path(cluster.dir)).processes["learner"]
    os.kill(victim.pid, signal.SIGKILL)

    status = learner.wait_until_done(run_id)
    assert status.state == SUCCEEDED, status.message
    assert status.policy_version == 8
    assert_every_prompt_trained_once(kept_steps(tmp_path, "kill-learner"), 8, 2)
    summary = json.loads(
        (run_folder(tmp_path, "kill-learner") / "grpo" / "summary.json").read_text()
    )
    assert summary["resumed_from_version"] >= 2  # checkpoints every 2 steps
    assert ClusterState.load(Path(cluster.dir)).processes["learner"].restarts >= 1


def test_redis_killed_mid_grpo_comes_back_from_its_aof_and_nothing_is_lost(
    cluster: ClusterState, letter_model: Path, tmp_path: Path
) -> None:
    learner = Learner(cluster)
    run_id = learner.submit(run_spec("kill-redis", letter_model, tmp_path, steps=8))
    learner.wait_for_step(run_id, 2)
    victim = ClusterState.load(Path(cluster.dir)).processes["redis"]
    os.kill(victim.pid, signal.SIGKILL)

    status = learner.wait_until_done(run_id)
    assert status.state == SUCCEEDED, status.message
    assert_every_prompt_trained_once(kept_steps(tmp_path, "kill-redis"), 8, 2)
    assert ClusterState.load(Path(cluster.dir)).processes["redis"].restarts >= 1


def test_status_and_watch_commands_read_the_local_cluster(
    cluster: ClusterState, letter_model: Path, tmp_path: Path
) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(run_spec("cli", letter_model, tmp_path, steps=2)))
    env = {**os.environ, "SKILLFACTORY_CLUSTER_DIR": cluster.dir}
    env.pop("SKILLFACTORY_TOKEN", None)
    env.pop("SKILLFACTORY_LEARNER", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300)

    submitted = cli("submit", str(spec_file))
    assert submitted.returncode == 0, submitted.stderr
    run_id = submitted.stdout.strip()
    watched = cli("watch", run_id)
    assert watched.returncode == 0, watched.stderr
    assert "run SUCCEEDED" in watched.stdout
    status = cli("status", run_id, "--json")
    assert json.loads(status.stdout)["state"] == "SUCCEEDED"


def call_every_rollout(cluster: ClusterState, generate: bool = True) -> None:
    """A GetPolicyVersion and a Generate call to each rollout service, with the token (before
    any run: GetPolicyVersion alone, as no model is loaded yet)."""
    auth = bearer_metadata(Path(cluster.token_file).read_text().strip())
    for name, process in cluster.processes.items():
        if name.startswith("rollout"):
            with grpc.insecure_channel(process.address) as channel:
                stub = rollout_pb2_grpc.RolloutStub(channel)
                version = stub.GetPolicyVersion(
                    rollout_pb2.GetPolicyVersionRequest(), metadata=auth, timeout=30
                )
                if not generate:
                    continue
                assert version.policy_version >= 1  # caught up with the run's weights
                request = rollout_pb2.GenerateRequest(
                    prompts=["Which letter?"], n=2, apply_chat_template=True
                )
                request.sampling.max_tokens = 4
                response = stub.Generate(request, metadata=auth, timeout=60)
                assert len(response.results[0].completions) == 2


def test_every_dashboard_panel_returns_data_from_prometheus_scraping_the_cluster(
    cluster: ClusterState, letter_model: Path, tmp_path: Path
) -> None:
    """A real Prometheus scrapes every service of the cluster during a short run; then every
    PromQL expression of every dashboard must return a finite sample."""
    from support.prometheus import (
        PrometheusServer,
        dashboard_expressions,
        has_finite_value,
        load_dashboard,
        prometheus_binary,
    )

    if prometheus_binary() is None:
        pytest.skip("the prometheus binary is missing (scripts/install-os-packages.sh)")
    dashboards = sorted(
        (Path(__file__).resolve().parents[3] / "charts" / "dashboards").glob("*.json")
    )
    exprs = sorted({e for path in dashboards for e in dashboard_expressions(load_dashboard(path))})
    targets = {
        name: [url.removeprefix("http://").removesuffix("/metrics")]
        for name, url in cluster.metrics_urls().items()
    }
    learner = Learner(cluster)
    with PrometheusServer(targets) as prometheus:
        prometheus.wait_for_targets_up()
        call_every_rollout(cluster, generate=False)  # latency rates need calls at two scrapes
        spec = run_spec("dashboards", letter_model, tmp_path, steps=12)
        spec["stages"] = ["data", "grpo"]
        spec["data"] = {
            "task": "csqa",
            "num_problems": 2,
            "samples_per_variant": 1,
            "reflections_per_sample": 1,
            "sampling": {"max_tokens": 8},
            "reflection_sampling": {"max_tokens": 8},
        }
        run_id = learner.submit(spec)
        assert learner.wait_until_done(run_id).state == SUCCEEDED
        call_every_rollout(cluster)  # the rollout RPC panels show clients' calls
        results = prometheus.wait_for_data(exprs, timeout_s=30)
    empty = [expr for expr, result in results.items() if not has_finite_value(result)]
    assert not empty, f"{len(empty)} of {len(exprs)} expressions without data: {empty}"


def test_a_learner_of_two_torchrun_processes_trains_sft_and_grpo_on_both(
    letter_model: Path, tmp_path: Path
) -> None:
    """`up --learner-procs 2`: rank 0 serves the API, rank 1 follows it; SFT splits the examples
    between the ranks (3 steps for 5 chats at batch 1) and GRPO trains FSDP2-sharded on both."""
    folder = tmp_path / "cluster"
    started = subprocess.run(
        [
            *CLI,
            "up",
            "--dir",
            str(folder),
            "--samplers",
            "1",
            "--learner-procs",
            "2",
            "--data-root",
            str(tmp_path.parent),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        learner = Learner(ClusterState.load(folder))
        spec = run_spec("ranks", letter_model, tmp_path, steps=4)
        spec["stages"] = ["sft", "grpo"]
        spec["sft"] = {
            "dataset": str(letter_chats(tmp_path / "chats.jsonl")),
            "num_epochs": 1,
            "learning_rate": 1e-5,
            "max_length": 256,
        }
        status = learner.wait_until_done(learner.submit(spec))
        assert status.state == SUCCEEDED, status.message
    finally:
        subprocess.run([*CLI, "down", "--dir", str(folder)], capture_output=True, timeout=180)
    sft = json.loads((run_folder(tmp_path, "ranks") / "sft" / "sft.json").read_text())
    assert sft["examples"] == 5 and sft["steps"] == 3
    summary = json.loads((run_folder(tmp_path, "ranks") / "grpo" / "summary.json").read_text())
    assert summary["learner_ranks"] == 2
    assert_every_prompt_trained_once(kept_steps(tmp_path, "ranks"), 4, 2)
    assert (run_folder(tmp_path, "ranks") / "grpo" / "model" / "model.safetensors").exists()
