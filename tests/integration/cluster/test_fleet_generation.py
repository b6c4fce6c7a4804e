"""Stage 1 and eval on the rollout fleet, for real: `skillfactory up` with two rollout services
running the seeded text engine (SIMULATION: completions a function of prompt and seed, ~10 ms
per decode step, no model; `engine: {type: simulated}`), a `data → sft → eval` run submitted
through the learner API, and the same spec run embedded with `skillfactory run`.

- The learner generates nothing itself: every stage-1 and eval token is counted by the rollout
  services (their `tokens_generated` counters against the tokens in the run's records).
- Every problem × prompt variant × sample and every reflection appears exactly once, and
  `samples.jsonl`, `sft.jsonl` and the eval records equal the embedded run's byte for byte.
- `kill -9` of a rollout service mid-stage-1 and of another mid-eval: the run completes with the
  same files, and the survivors reclaimed the dead ones' tasks.
SFT trains the tiny config-built model for real (the simulated engine ignores its weights).
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

import pytest
import yaml

from skillfactory.cluster.local import ClusterState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_local_cluster import CLI, SUCCEEDED, TERMINAL, Learner, total  # noqa: E402

pytestmark = pytest.mark.skipif(
    not any(Path(p, "redis-server").exists() for p in os.environ.get("PATH", "").split(":")),
    reason="redis-server is not installed (scripts/install-os-packages.sh)",
)

VARIANTS = 4
SAMPLES, REFLECTIONS, PROBLEMS = 2, 2, 8


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    folder = tmp_path_factory.mktemp("fleet")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    up = [*CLI, "up", "--dir", str(folder), "--samplers", "2", "--engine", "simulated"]
    up += ["--claim-idle-ms", "2000", "--simulated-token-delay-ms", "10", "--gpus", "0"]
    up += ["--data-root", str(tmp_path_factory.getbasetemp())]
    started = subprocess.run(up, capture_output=True, text=True, env=env, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield ClusterState.load(folder)
    finally:
        subprocess.run([*CLI, "down", "--dir", str(folder)], capture_output=True, timeout=180)


def spec(name: str, model: Path, out: Path) -> dict[str, Any]:
    return {
        "name": name,
        "model": str(model),
        "output_dir": str(out),
        "stages": ["data", "sft", "eval"],
        "engine": {"type": "simulated", "max_batch_size": 16},
        "data": {
            "task": "csqa",
            "num_problems": PROBLEMS,
            "samples_per_variant": SAMPLES,
            "reflections_per_sample": REFLECTIONS,
            "sampling": {"max_tokens": 64},
            "reflection_sampling": {"max_tokens": 64},
        },
        "sft": {"num_epochs": 1, "learning_rate": 1e-5, "max_length": 256},
        "eval": {"tasks": ["csqa"], "num_problems": 6, "samples_per_problem": 2, "max_tokens": 64},
    }


def outputs(run: Path) -> dict[str, str]:
    files = [run / "data" / "samples.jsonl", run / "data" / "sft.jsonl"]
    files += sorted((run / "eval").glob("*/*.jsonl"))
    return {str(f.relative_to(run)): f.read_text() for f in files}


def record_tokens(run: Path) -> int:
    tokens = 0
    for line in (run / "data" / "samples.jsonl").read_text().splitlines():
        for sample in json.loads(line)["samples"]:
            tokens += sample["tokens"] + sum(r["tokens"] for r in sample["reflections"])
    for path in (run / "eval").glob("*/*.jsonl"):
        tokens += sum(json.loads(line)["tokens"] for line in path.read_text().splitlines())
    return tokens


def assert_every_row_once(run: Path) -> None:
    records = [
        json.loads(line) for line in (run / "data" / "samples.jsonl").read_text().splitlines()
    ]
    assert len({r["id"] for r in records}) == len(records) == PROBLEMS
    for record in records:
        assert len(record["samples"]) == VARIANTS * SAMPLES
        per_variant: dict[str, int] = {}
        for sample in record["samples"]:
            per_variant[sample["prompt_variant"]] = per_variant.get(sample["prompt_variant"], 0) + 1
            assert len(sample["reflections"]) == REFLECTIONS
        assert set(per_variant.values()) == {SAMPLES} and len(per_variant) == VARIANTS


@pytest.fixture(scope="module")
def embedded(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("embedded")
    spec_file = out / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec("fleet-run", tiny_model_dir, out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*CLI, "run", str(spec_file)], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "fleet-run"


def test_stage1_and_eval_run_on_the_rollouts_and_write_the_embedded_files(
    fleet: ClusterState, embedded: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    learner = Learner(fleet)
    before = total(fleet, "rollout", "skillfactory_rollout_tokens_generated_total")
    run_id = learner.submit(spec("fleet-run", tiny_model_dir, tmp_path))
    status = learner.wait_until_done(run_id, timeout_s=900)
    assert status.state == SUCCEEDED, status.message
    run = tmp_path / run_id / "fleet-run"  # the service keys run folders by run id
    assert_every_row_once(run)
    assert outputs(run) == outputs(embedded)
    on_the_fleet = total(fleet, "rollout", "skillfactory_rollout_tokens_generated_total") - before
    assert on_the_fleet >= 0.9 * record_tokens(run) > 0
    generation = "skillfactory_rollout_requests_total{method=generation}"
    for name in fleet.metrics_urls():
        if name.startswith("rollout"):
            assert total(fleet, name, generation) > 0, f"{name} served no generation task"


def test_rollouts_killed_mid_stage1_and_mid_eval_lose_nothing(
    fleet: ClusterState, embedded: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    learner = Learner(fleet)
    run_id = learner.submit(spec("fleet-run", tiny_model_dir, tmp_path))
    killed: list[str] = []
    for event in learner.events(run_id):
        if event.WhichOneof("kind") == "metrics" and event.stage in ("data", "eval")[len(killed) :]:
            victim = f"rollout-{len(killed)}"  # after the first stage-1 chunk, the first eval task
            os.kill(ClusterState.load(Path(fleet.dir)).processes[victim].pid, signal.SIGKILL)
            killed.append(victim)
        if event.WhichOneof("kind") == "state" and event.state in TERMINAL:
            break
    status = learner.wait_until_done(run_id, timeout_s=900)
    assert status.state == SUCCEEDED, status.message
    assert killed == ["rollout-0", "rollout-1"]
    run = tmp_path / run_id / "fleet-run"
    assert_every_row_once(run)
    assert outputs(run) == outputs(embedded)
    after = ClusterState.load(Path(fleet.dir))
    assert all(after.processes[name].restarts >= 1 for name in killed)
    # the survivor of each kill reclaimed the dead one's tasks (a killed process's own counters
    # start over with it, so only the last kill's reclaims are sure to be on a live counter)
    reclaimed = total_once_up(
        Path(fleet.dir), "rollout", "skillfactory_sampler_tasks_reclaimed_total"
    )
    assert reclaimed > 0


def total_once_up(state_dir: Path, prefix: str, series: str, timeout_s: float = 120.0) -> float:
    """`total` once every process it scrapes answers: a restarted rollout may still be starting
    (its metrics port not yet bound) when the run ends."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return total(ClusterState.load(state_dir), prefix, series)
        except OSError:  # URLError: refused while the process starts
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
