"""Elastic rollouts on the local cluster: `skillfactory up --samplers 1 --max-samplers 3` scales
the rollout services with the queue's backlog — out to 3 under a burst of eval work, back to 1
once it is done — and no task is lost: the run completes with every eval row once.

The rollout services run the seeded text engine (SIMULATION: ~20 ms per decode step, no model), so
the burst lasts long enough for new services to start on two busy cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from skillfactory.cluster.local import ClusterState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_local_cluster import CLI, SUCCEEDED, Learner  # noqa: E402

pytestmark = pytest.mark.skipif(
    not any(Path(p, "redis-server").exists() for p in os.environ.get("PATH", "").split(":")),
    reason="redis-server is not installed (scripts/install-os-packages.sh)",
)

PROBLEMS, SAMPLES = 600, 4


@pytest.fixture(scope="module")
def elastic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    folder = tmp_path_factory.mktemp("elastic")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    up = [*CLI, "up", "--dir", str(folder), "--samplers", "1", "--max-samplers", "3"]
    up += ["--tasks-per-replica", "8", "--scale-down-cooldown-s", "5", "--engine", "simulated"]
    up += ["--simulated-token-delay-ms", "20", "--claim-idle-ms", "3000", "--gpus", "0"]
    up += ["--data-root", str(tmp_path_factory.getbasetemp())]
    started = subprocess.run(up, capture_output=True, text=True, env=env, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield ClusterState.load(folder)
    finally:
        subprocess.run([*CLI, "down", "--dir", str(folder)], capture_output=True, timeout=180)


def rollouts(folder: Path) -> int:
    return sum(1 for name in ClusterState.load(folder).processes if name.startswith("rollout-"))


def test_a_burst_scales_the_rollouts_out_and_back_in_without_losing_a_task(
    elastic: ClusterState, tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = Path(elastic.dir)
    assert rollouts(folder) == 1
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(rollouts(folder))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    learner = Learner(elastic)
    run_id = learner.submit(
        {
            "name": "burst",
            "model": str(tiny_model_dir),
            "output_dir": str(tmp_path),
            "stages": ["eval"],
            "engine": {"type": "simulated", "max_batch_size": 64},
            "data": {"task": "csqa", "num_problems": 1},
            "eval": {
                "tasks": ["csqa"],
                "num_problems": PROBLEMS,
                "samples_per_problem": SAMPLES,
                "max_tokens": 64,
            },
        }
    )
    status = learner.wait_until_done(run_id, timeout_s=900)
    assert status.state == SUCCEEDED, status.message
    deadline = time.monotonic() + 120
    while rollouts(folder) > 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    watcher.join(5)
    assert max(seen) == 3, seen
    assert rollouts(folder) == 1
    records = (
        (tmp_path / run_id / "burst" / "eval" / "base" / "csqa.jsonl").read_text().splitlines()
    )
    keys = [(r["problem_id"], r["sample"]) for r in map(json.loads, records)]
    assert len(keys) == len(set(keys)) == PROBLEMS * SAMPLES
