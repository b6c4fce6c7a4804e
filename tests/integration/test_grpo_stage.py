"""Stage 3 end to end on the tiny model: sampler thread, in-process queue, learner, weight sync."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skillfactory.stages.grpo import STEPS_FILE

sys.path.insert(0, str(Path(__file__).parent))
from first_token_grpo import run  # noqa: E402

SCRIPT = Path(__file__).parent / "first_token_grpo.py"


def steps_of(run_dir: Path) -> list[dict[str, object]]:
    path = run_dir / "grpo" / STEPS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("max_staleness", [0, 2])
def test_mean_reward_rises_on_a_learnable_reward(
    tiny_model_dir: Path, tmp_path: Path, max_staleness: int
) -> None:
    summary = run(tiny_model_dir, tmp_path, max_staleness, steps=20, save_steps=10)
    steps = steps_of(tmp_path / f"first-token-s{max_staleness}")
    assert [s["version"] for s in steps] == list(range(1, 21))
    first = sum(float(s["reward_mean"]) for s in steps[:3]) / 3  # type: ignore[arg-type]
    last = sum(float(s["reward_mean"]) for s in steps[-3:]) / 3  # type: ignore[arg-type]
    assert last >= 0.6 and last - first >= 0.3, (first, last)
    lags = {int(k) for s in steps for k in s["staleness"]}  # type: ignore[attr-defined]
    assert max(lags) <= max_staleness
    if max_staleness == 0:
        assert lags == {0}
        assert all(s["importance_weight_mean"] == 1.0 for s in steps)
    assert summary["groups_trained"] == 20 * 4
    assert (tmp_path / f"first-token-s{max_staleness}" / "grpo" / "model" / "config.json").exists()


@pytest.mark.parametrize("lora_rank", [0, 4], ids=["full", "lora"])
def test_killed_run_resumes_with_version_continuity_and_no_group_trained_twice(
    tiny_model_dir: Path, tmp_path: Path, lora_rank: int
) -> None:
    run_dir = tmp_path / ("first-token-s1" + ("-lora" if lora_rank else ""))
    args = [sys.executable, str(SCRIPT), str(tiny_model_dir), str(tmp_path), "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen(
        [*args, "200", "1", str(lora_rank)], env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while len(steps_of(run_dir)) < 4 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)  # a real kill, mid-step or mid-checkpoint
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    before = steps_of(run_dir)
    assert len(before) >= 4

    resumed = subprocess.run(
        [*args, str(len(before) + 4), "1", str(lora_rank)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["resumed_from_version"] >= 3
    steps = steps_of(run_dir)
    versions = [s["version"] for s in steps]
    assert versions == list(range(1, len(before) + 5))
    assert summary["steps"] == versions[-1]
    trained = [g for s in steps for g in s["group_ids"]]  # type: ignore[attr-defined]
    assert len(trained) == len(set(trained)) == 4 * len(steps)
    # the steps kept from before the kill are exactly the first ones, unchanged
    assert steps[: summary["resumed_from_version"]] == before[: summary["resumed_from_version"]]
    checkpoint = sorted((run_dir / "grpo" / "checkpoints").glob("step-*"))[-1]
    assert (checkpoint / "adapter").is_dir() == bool(lora_rank)  # LoRA: the adapter, no model
    assert (run_dir / "grpo" / "model" / "adapter").is_dir() == bool(lora_rank)


def test_a_run_where_every_group_is_filtered_stops_with_a_clear_error(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Zero-variance filter on and a reward that is always 0: no group can train, so the stage
    stops after 20 steps' worth of refusals instead of sampling forever."""
    from first_token_grpo import first_token_spec  # noqa: I001 (the script's folder is on sys.path)

    from skillfactory.engines.transformers_engine import TransformersEngine
    from skillfactory.rollout.scoring import per_completion
    from skillfactory.stages.grpo import GRPOStage, StalledRun

    spec = first_token_spec(tmp_path, 1, 3, 1)
    grpo = spec.grpo.model_copy(update={"filter_zero_variance": True, "max_response_length": 2})
    spec = spec.model_copy(update={"grpo": grpo})
    stage = GRPOStage(
        spec,
        tiny_model_dir,
        lambda path: TransformersEngine(path, device="cpu", max_batch_size=64, seed=0),
        score=per_completion(lambda problem, completion: 0.0),
    )
    with pytest.raises(StalledRun, match="zero reward variance: 2"):
        stage.run()
