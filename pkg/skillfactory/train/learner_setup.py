"""Building the GRPO learner: the one factory the GRPO stage and the follower ranks both call, so
every rank of a `torchrun` learner holds the same model, optimizer and checkpoint.

`setup_learner` seeds torch, loads the model (fp32 master weights) and the reference model when a
KL term needs one, resumes from the newest checkpoint under `checkpoints`, and — on rank 0 of
several — wraps the learner in a `LeaderLearner`, which tells the other ranks to join each
collective (a step, a weight gather, a checkpoint) before it runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import AutoModelForCausalLM, AutoTokenizer

from skillfactory.group import Group
from skillfactory.runspec import GRPOSpec
from skillfactory.train.learner import GRPOLearner, Learner, LearnerCounters, latest_checkpoint
from skillfactory.train.ranks import RankGroup, leading
from skillfactory.train.step_record import StepRecord
from skillfactory.wire.messages import group_to_proto


class LeaderLearner:
    """Rank 0's learner: tells the other ranks before each collective, then joins it."""

    def __init__(self, learner: GRPOLearner, ranks: RankGroup, run_id: str) -> None:
        self.learner = learner
        self.ranks = ranks
        self.run_id = run_id

    @property
    def version(self) -> int:
        return self.learner.version

    @property
    def counters(self) -> LearnerCounters:
        return self.learner.counters

    @property
    def world_size(self) -> int:
        return self.learner.world_size

    def is_done(self, prompt_index: int) -> bool:
        return self.learner.is_done(prompt_index)

    def accepts(self, group: Group) -> bool:
        return self.learner.accepts(group)

    def train_step(self, groups: Sequence[Group]) -> StepRecord:
        payload = [group_to_proto(group, self.run_id).SerializeToString() for group in groups]
        self.ranks.tell("step", payload)
        return self.learner.train_step(groups)

    def weights(self) -> dict[str, Tensor]:
        self.ranks.tell("weights")
        return self.learner.weights()

    def save_checkpoint(self, root: str | Path) -> Path:
        self.ranks.tell("checkpoint", str(root))
        return Path(self.learner.save_checkpoint(root))

    def save_model(self, folder: str | Path) -> None:
        self.ranks.tell("weights")
        self.learner.save_model(folder)


def load_tokenizer(model_path: str) -> Any:
    """The tokenizer of the model folder GRPO starts from."""
    return AutoTokenizer.from_pretrained(model_path)


def setup_learner(
    spec: GRPOSpec,
    model_path: str,
    checkpoints: Path,
    *,
    seed: int,
    pad_token_id: int,
    ranks: RankGroup | None = None,
    run_id: str = "",
) -> Learner:
    """The learner on `model_path`, resumed from the latest checkpoint under `checkpoints` when
    there is one; rank 0 of several gets a `LeaderLearner`."""
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.to(device)
    ref: Any = None
    if spec.kl_beta > 0:
        ref = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        ref.to(device)
        ref.eval().requires_grad_(False)
    learner = GRPOLearner(model, spec, pad_token_id=pad_token_id, ref_model=ref)
    checkpoint = latest_checkpoint(checkpoints)
    if checkpoint is not None:
        learner.load_checkpoint(checkpoint)
    leader = leading(ranks)
    return LeaderLearner(learner, leader, run_id) if leader is not None else learner


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id (0 when it has none)."""
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0
