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
    GroupIntake,
    restart_leftovers,
)
from skillfactory.tasks import Problem
from skillfactory.train.staleness import AdmissionController
from skillfactory.wire.messages import group_to_proto


def group(index: int, epoch: str) -> Group:
    completion = Completion("x", [1], [0.0], "stop", 0, [1])
    problem = Problem(f"q{index}", "multiplication-1", "?", "1")
    return Group(f"p{index}", problem, [1], [completion], [0.0], prompt_index=index, epoch=epoch)


class CurrentEpoch:
    def owns(self, g: Group) -> bool:
        return g.epoch == "new"


class Trained:
    """A learner that trained prompt 1 and accepts every group but prompt 5's."""

    def __init__(self) -> None:
        self.refused = 0

    def is_done(self, index: int) -> bool:
        return index == 1

    def accepts(self, g: Group) -> bool:
        if g.prompt_index == 5:
            self.refused += 1
            return False
        return True


def intake(queue: InProcessQueue | None = None) -> GroupIntake:
    admission = AdmissionController(4, max_staleness=0)
    assert admission.admit_blocking(3, timeout=0) == 3  # the prompts whose groups come back
    return GroupIntake(
        queue or InProcessQueue(),
        Trained(),  # type: ignore[arg-type]
        CurrentEpoch(),  # type: ignore[arg-type]
        admission,
        max_refused=10,
    )


def test_other_epochs_are_ignored_and_repeated_prompts_counted_as_duplicates() -> None:
    parts = intake()
    parts.waiting = [("1-0", group(2, "new"))]
    assert not parts.wanted(group(0, "old"))
    assert parts.duplicates == 0
    assert not parts.wanted(group(1, "new"))
    assert not parts.wanted(group(2, "new"))
    assert parts.duplicates == 2
    assert parts.wanted(group(3, "new"))


def test_intake_batches_accepted_groups_and_acks_only_at_a_checkpoint() -> None:
    queue = InProcessQueue()
    for index, epoch in ((0, "old"), (1, "new"), (2, "new"), (3, "new"), (5, "new")):
        put_message(queue, GROUPS_STREAM, group_to_proto(group(index, epoch), "run"))
    queue.put(GROUPS_STREAM, b"\xff not a group")
    parts = intake(queue)
    parts.pull(timeout_s=0)
    assert parts.undecodable == 1 and parts.duplicates == 1  # prompt 1 was trained already
    assert [g.prompt_index for _, g in parts.waiting] == [2, 3]
    assert queue.pending(GROUPS_STREAM, LEARNER_GROUP) == 3  # 2, 3 waiting and 5 refused
    assert [g.prompt_index for g in parts.next_batch(2)] == [2, 3]
    assert parts.next_batch(2) == [] and queue.pending(GROUPS_STREAM, LEARNER_GROUP) == 3
    parts.ack_covered()
    assert queue.pending(GROUPS_STREAM, LEARNER_GROUP) == 0


def test_a_restarted_learner_acks_what_its_predecessor_took_and_never_trained() -> None:
    queue = InProcessQueue()
    for index in range(3):
        put_message(queue, GROUPS_STREAM, group_to_proto(group(index, "old"), "run"))
    assert len(queue.get(GROUPS_STREAM, LEARNER_GROUP, LEARNER_ID, 2, 0)) == 2  # then it died
    assert restart_leftovers(queue) == 2
    assert queue.pending(GROUPS_STREAM, LEARNER_GROUP) == 0
    assert queue.depth(GROUPS_STREAM, LEARNER_GROUP) == 1  # never delivered: read as usual
