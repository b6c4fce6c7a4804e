"""Two GRPO learner steps on fixed groups, alone or under `torchrun` (FSDP2 over gloo on CPU).

    [torchrun --nproc_per_node 2] fsdp_worker.py MODEL_DIR OUT_DIR [RESUME_CHECKPOINT]

Writes `OUT_DIR/weights.pt` (full weights after the last step), `OUT_DIR/metrics.json` and a
checkpoint after the first step under `OUT_DIR/checkpoints` (rank 0; FSDP2 gathers it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def groups_of_step(step: int) -> list:  # type: ignore[type-arg]
    from skillfactory.engines.base import Completion
    from skillfactory.group import Group
    from skillfactory.tasks.base import Problem

    problem = Problem(id="q", task="countdown-3", question="?", answer="1")
    groups = []
    for g in range(4):
        index = 4 * step + g
        completions = [
            Completion(
                text="",
                token_ids=[(11 * index + 5 * j + k) % 400 + 20 for k in range(3 + (j + g) % 4)],
                logprobs=[-6.0] * (3 + (j + g) % 4),
                finish_reason="stop",
                policy_version=step,
                prompt_token_ids=[5, 6 + g, 7 + index],
            )
            for j in range(4)
        ]
        rewards = [float((j + g) % 2) for j in range(4)]
        groups.append(
            Group(
                f"p{index}",
                problem,
                [5, 6 + g, 7 + index],
                completions,
                rewards,
                prompt_index=index,
            )
        )
    return groups


def main(model_dir: str, out: str, resume: str | None) -> None:
    from transformers import AutoModelForCausalLM

    from skillfactory.runspec import GRPOSpec
    from skillfactory.train.learner import GRPOLearner
    from skillfactory.train.parallel import world

    torch.set_num_threads(1)
    distributed = "WORLD_SIZE" in __import__("os").environ
    if distributed:
        torch.distributed.init_process_group("gloo")
    rank, size = world()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    overrides = json.loads(__import__("os").environ.get("SF_GRPO_SPEC", "{}"))
    spec = GRPOSpec(
        **{"learning_rate": 1e-2, "mini_batch_size": 256, "max_staleness": 0, **overrides}
    )  # one update per step unless the test asks for more
    learner = GRPOLearner(model, spec, pad_token_id=0)
    if resume:
        learner.load_checkpoint(resume)
    metrics = []
    while learner.version < 2:
        metrics.append(learner.train_step(groups_of_step(learner.version)).to_json())
        if learner.version == 1 and not resume:
            learner.save_checkpoint(Path(out) / "checkpoints")
    weights = learner.weights()
    if rank == 0:
        torch.save(weights, Path(out) / "weights.pt")
        (Path(out) / "metrics.json").write_text(json.dumps({"world": size, "steps": metrics}))
    if distributed:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
