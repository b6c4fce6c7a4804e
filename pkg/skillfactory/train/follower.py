"""What ranks > 0 of a `torchrun` learner do: follow rank 0 through what trains on every rank.

- SFT: every rank runs TRL's `SFTTrainer` on the same arguments (data parallel, as under
  `accelerate launch`); rank 0 writes the result files.
- GRPO: every rank builds the same learner (`setup_learner`: FSDP2-sharded, from the same
  checkpoint); rank 0 takes groups from the queue and, before each collective of the learner (a
  step, gathering full weights, a checkpoint), tells the other ranks to join it with the step's
  groups. Each rank trains its share of them (`groups[rank::world]`).
- Stage 1 and eval sample with rank 0's engine alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from skillfactory.runspec import GRPOSpec, SFTSpec
from skillfactory.train.learner_setup import setup_learner
from skillfactory.train.ranks import RankGroup
from skillfactory.train.sft import run_sft
from skillfactory.v1 import data_pb2
from skillfactory.wire.messages import group_from_proto

log = logging.getLogger(__name__)


def follow(ranks: RankGroup) -> None:
    """The body of ranks > 0: run what rank 0 says until it says shutdown."""
    while True:
        command, *args = ranks.hear()
        log.info("rank command", extra={"command": command, "rank": ranks.rank})
        if command == "sft":
            follow_sft(*args)
        elif command == "grpo":
            follow_grpo(ranks, *args)
        elif command == "shutdown":
            return


def follow_sft(spec_json: str, model: str, dataset: str, out: str, seed: int) -> None:
    """Train this rank's share of SFT."""
    run_sft(SFTSpec.model_validate_json(spec_json), model, dataset, out, seed)


def follow_grpo(
    ranks: RankGroup, spec_json: str, model: str, checkpoints: str, seed: int, pad: int
) -> None:
    """Build the same learner as rank 0 and join its collectives until it says end."""
    spec = GRPOSpec.model_validate_json(spec_json)
    learner = setup_learner(spec, model, Path(checkpoints), seed=seed, pad_token_id=pad)
    while True:
        command, *args = ranks.hear()
        if command == "step":
            learner.train_step(
                [group_from_proto(data_pb2.Group.FromString(raw)) for raw in args[0]]
            )
        elif command == "weights":
            learner.weights()
        elif command == "checkpoint":
            learner.save_checkpoint(args[0])
        elif command == "end":
            return
