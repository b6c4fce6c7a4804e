"""Which queued groups the GRPO learner considers: only its own epoch's (a restarted learner drops
what its predecessor asked for), and each prompt once (a reclaimed rollout task can yield a second
group for a prompt already trained on or waiting)."""

from __future__ import annotations

from skillfactory.engines.base import Completion
from skillfactory.group import Group
from skillfactory.queue import InProcessQueue, put_message
from skillfactory.stages.grpo import (
    GROUPS_STREAM,
    LEARNER_GROUP,
    LEARNER_ID,
    GRPOStage,
    restart_leftovers,
)
from skillfactory.tasks import Problem


def group(index: int, epoch: str) -> Group:
    completion = Completion("x", [1], [0.0], "stop", 0, [1])
    problem = Problem(f"q{index}", "multiplication-1", "?", "1")
    return Group(f"p{index}", problem, [1], [completion], [0.0], prompt_index=index, epoch=epoch)


class CurrentEpoch:
    def owns(self, g: Group) -> bool:
        return g.epoch == "new"


class Trained:
    def is_done(self, index: int) -> bool:
        return index == 1


def test_other_epochs_are_ignored_and_repeated_prompts_counted_as_duplicates() -> None:
    stage = GRPOStage.__new__(GRPOStage)
    stage.duplicates = 0
    waiting = [("1-0", group(2, "new"))]
    rollouts, learner = CurrentEpoch(), Trained()
    assert not stage.wanted(group(0, "old"), rollouts, learner, waiting)  # type: ignore[arg-type]
    assert stage.duplicates == 0
    assert not stage.wanted(group(1, "new"), rollouts, learner, waiting)  # type: ignore[arg-type]
    assert not stage.wanted(group(2, "new"), rollouts, learner, waiting)  # type: ignore[arg-type]
    assert stage.duplicates == 2
    assert stage.wanted(group(3, "new"), rollouts, learner, waiting)  # type: ignore[arg-type]


def test_a_restarted_learner_acks_what_its_predecessor_took_and_never_trained() -> None:
    queue = InProcessQueue()
    for index in range(3):
        put_message(queue, GROUPS_STREAM, group(index, "old").to_proto("run"))
    assert len(queue.get(GROUPS_STREAM, LEARNER_GROUP, LEARNER_ID, 2, 0)) == 2  # then it died
    assert restart_leftovers(queue) == 2
    assert queue.pending(GROUPS_STREAM, LEARNER_GROUP) == 0
    assert queue.depth(GROUPS_STREAM, LEARNER_GROUP) == 1  # never delivered: read as usual
