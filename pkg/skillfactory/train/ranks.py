"""The processes of one learner under `torchrun` (one node or several): rank 0 leads, the other
ranks follow it (`skillfactory.train.follower`).

Rank 0 sends commands with `broadcast_object_list` over a gloo group (also when training runs on
NCCL), so followers wait for the next command without a device. `join_ranks` joins the process
group and returns this process's `RankGroup`; the caller passes it to whatever must bring the
other ranks along (the pipeline's SFT stage, the GRPO stage's learner).
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any

import torch

from skillfactory.train.parallel import world

log = logging.getLogger(__name__)


class RankGroup:
    """The processes of one learner; rank 0 leads."""

    def __init__(self) -> None:
        self.rank, self.size = world()
        self._group = torch.distributed.new_group(backend="gloo")

    @property
    def leads(self) -> bool:
        return self.rank == 0

    def tell(self, *message: Any) -> None:
        """Rank 0: send a command to every other rank."""
        torch.distributed.broadcast_object_list([message], src=0, group=self._group)

    def hear(self) -> tuple[Any, ...]:
        """Other ranks: wait for rank 0's next command."""
        box: list[Any] = [None]
        torch.distributed.broadcast_object_list(box, src=0, group=self._group)
        return tuple(box[0])


def join_ranks() -> RankGroup | None:
    """Under torchrun (WORLD_SIZE > 1), join the process group and return this process's
    `RankGroup`; None for a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    # Followers may wait between runs for days: no collective timeout to speak of.
    torch.distributed.init_process_group(backend, timeout=datetime.timedelta(days=365))
    ranks = RankGroup()
    log.info("learner rank joined", extra={"rank": ranks.rank, "world": ranks.size})
    return ranks


def leading(ranks: RankGroup | None) -> RankGroup | None:
    """`ranks` when this process leads several, else None (nothing to tell anyone)."""
    return ranks if ranks is not None and ranks.leads and ranks.size > 1 else None
