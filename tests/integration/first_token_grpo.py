"""GRPO on a trivially learnable reward, as a script (the crash test runs it as a process).

Reward: 1 when the first completion token is one of a quarter of the vocabulary (ids 100–227),
0 otherwise; a random tiny model starts near 0.25 and GRPO must push it toward 1.

    python first_token_grpo.py MODEL_DIR OUTPUT_DIR MAX_STALENESS STEPS [SAVE_STEPS [LORA_RANK]]

With LORA_RANK > 0 the learner trains LoRA adapters of that rank (run name `…-lora`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from skillfactory.engines.base import Completion
from skillfactory.runspec import RunSpec, parse_run_spec
from skillfactory.tasks.base import Problem

TARGET_TOKENS = range(100, 228)


def first_token_reward(problem: Problem, completion: Completion) -> float:
    """1.0 when the completion starts with a target token."""
    return 1.0 if completion.token_ids and completion.token_ids[0] in TARGET_TOKENS else 0.0


def first_token_spec(
    output_dir: Path, max_staleness: int, steps: int, save_steps: int, lora_rank: int = 0
) -> RunSpec:
    """Small groups, high learning rate, 8-token completions: a few seconds on one core."""
    return parse_run_spec(
        {
            "name": f"first-token-s{max_staleness}" + ("-lora" if lora_rank else ""),
            "output_dir": str(output_dir),
            "grpo": {
                "task": "countdown-3",
                "num_problems": 50,
                "steps": steps,
                "group_size": 8,
                "prompts_per_step": 4,
                "mini_batch_size": 2,
                "learning_rate": 2e-2,
                "max_staleness": max_staleness,
                "max_response_length": 8,
                "save_steps": save_steps,
                "lora": {"rank": lora_rank, "alpha": 2.0 * lora_rank or 16.0},
            },
        }
    )


def run(
    model: Path,
    output_dir: Path,
    max_staleness: int,
    steps: int,
    save_steps: int,
    lora_rank: int = 0,
) -> Any:
    """Train and return the stage summary."""
    import torch

    from skillfactory.engines.transformers_engine import TransformersEngine
    from skillfactory.rollout.scoring import per_completion
    from skillfactory.stages.grpo import GRPOStage

    torch.set_num_threads(1)
    spec = first_token_spec(output_dir, max_staleness, steps, save_steps, lora_rank)
    stage = GRPOStage(
        spec,
        model,
        lambda path: TransformersEngine(path, device="cpu", max_batch_size=64, seed=0),
        score=per_completion(first_token_reward),
    )
    return stage.run()


if __name__ == "__main__":
    model_dir, out_dir, staleness, total = sys.argv[1:5]
    save = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    rank = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    print(json.dumps(run(Path(model_dir), Path(out_dir), int(staleness), int(total), save, rank)))
