"""A learner of several processes (`torchrun`, one node or several): rank 0 serves the learner API
and runs the pipeline; the other ranks *follow* it through what trains on every rank.

- SFT: every rank runs TRL's `SFTTrainer` on the same arguments (data parallel, as under
  `accelerate launch`); rank 0 writes the result files.
- GRPO: every rank builds the same learner (FSDP2-sharded, `skillfactory.train.parallel`) from the
  same checkpoint; rank 0 takes groups from the queue and, before each collective of the learner
  (a step, gathering full weights to publish, a checkpoint), tells the other ranks to join it with
  the step's groups. Each rank trains its share of them (`groups[rank::world]`).
- Stage 1 and eval sample with rank 0's engine alone.

Rank 0 sends commands with `broadcast_object_list` over a gloo group (also when training runs on
NCCL), so followers wait for the next command without a device.
"""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_current: RankGroup | None = None


class RankGroup:
    """The processes of one learner; rank 0 leads."""

    def __init__(self) -> None:
        import torch

        from skillfactory.train.parallel import world

        self.rank, self.size = world()
        self._group = torch.distributed.new_group(backend="gloo")

    @property
    def leads(self) -> bool:
        return self.rank == 0

    def tell(self, *message: Any) -> None:
        """Rank 0: send a command to every other rank."""
        import torch

        torch.distributed.broadcast_object_list([message], src=0, group=self._group)

    def hear(self) -> tuple[Any, ...]:
        """Other ranks: wait for rank 0's next command."""
        import torch

        box: list[Any] = [None]
        torch.distributed.broadcast_object_list(box, src=0, group=self._group)
        return tuple(box[0])


def join_ranks() -> RankGroup | None:
    """Under torchrun (WORLD_SIZE > 1), join the process group and return this process's
    `RankGroup` (also what `leader()` returns on rank 0); None for a single process."""
    global _current
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    # Followers may wait between runs for days: no collective timeout to speak of.
    torch.distributed.init_process_group(backend, timeout=datetime.timedelta(days=365))
    _current = RankGroup()
    log.info("learner rank joined", extra={"rank": _current.rank, "world": _current.size})
    return _current


def leader() -> RankGroup | None:
    """The rank group when this process is rank 0 of several, else None."""
    return _current if _current is not None and _current.leads else None


class LeaderLearner:
    """Rank 0's GRPO learner: tells the other ranks before each collective, then joins it."""

    def __init__(self, learner: Any, ranks: RankGroup, run_id: str) -> None:
        self.learner = learner
        self.ranks = ranks
        self.run_id = run_id

    def train_step(self, groups: list[Any]) -> Any:
        payload = [group.to_proto(self.run_id).SerializeToString() for group in groups]
        self.ranks.tell("step", payload)
        return self.learner.train_step(groups)

    def weights(self) -> Any:
        self.ranks.tell("weights")
        return self.learner.weights()

    def save_checkpoint(self, root: str | Path) -> Path:
        self.ranks.tell("checkpoint", str(root))
        return Path(self.learner.save_checkpoint(root))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.learner, name)


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
    from skillfactory.runspec import SFTSpec
    from skillfactory.train.sft import run_sft

    run_sft(SFTSpec.model_validate_json(spec_json), model, dataset, out, seed)


def follow_grpo(ranks: RankGroup, spec_json: str, model: str, out: str) -> None:
    """Build the same learner as rank 0 and join its collectives until it says end."""
    from skillfactory.group import Group
    from skillfactory.queue import InProcessQueue
    from skillfactory.runspec import RunSpec
    from skillfactory.stages.grpo import GRPOStage
    from skillfactory.v1 import data_pb2

    def no_engine(path: str) -> Any:
        raise RuntimeError("a follower rank samples nothing")

    stage = GRPOStage(
        RunSpec.model_validate_json(spec_json),
        model,
        no_engine,
        queue=InProcessQueue(),
        out=Path(out),
    )
    learner = stage.build_learner()
    while True:
        command, *args = ranks.hear()
        if command == "step":
            groups = [Group.from_proto(data_pb2.Group.FromString(raw)) for raw in args[0]]
            learner.train_step(groups)
        elif command == "weights":
            learner.weights()
        elif command == "checkpoint":
            learner.save_checkpoint(args[0])
        elif command == "end":
            return
