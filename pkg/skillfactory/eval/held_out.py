"""Held-out test problems of a task: a seeded draw from its test split, none of which stage 1 saw.

Generated tasks draw from their `"test"` stream (problem i depends on name, split, seed and i, so
it is a different stream from the `"train"` one stage 1 uses). Dataset tasks use their `"test"`
split when they ship one (gsm8k, math500) and otherwise the only split with answers (csqa's
validation). Either way a problem whose question equals one of stage 1's training problems, or
an earlier test problem, is skipped and the draw goes on, so the test set is disjoint from what
stage 1 trains on even for small problem spaces (countdown-3, multiplication-2) or a task with a
single split.
"""

from __future__ import annotations

from skillfactory.runspec import RunSpec
from skillfactory.seeds import data_stage_seed
from skillfactory.tasks import Problem, Task, get_task, use_datasets

TEST_SPLIT = "test"
MAX_DOUBLINGS = 8
"""How often the draw is doubled when skipped problems leave it short."""


def eval_split(task: Task) -> str:
    """The split a task's test problems come from."""
    packaged = getattr(task, "packaged_splits", None)
    if packaged is None or TEST_SPLIT in packaged or getattr(task, "source", None) == "hf":
        return TEST_SPLIT
    return str(getattr(task, "default_split", TEST_SPLIT))


def training_questions(spec: RunSpec, task_name: str) -> frozenset[str]:
    """Questions of the problems stage 1 of this spec trains on, when it trains on `task_name`."""
    if spec.data.task != task_name:
        return frozenset()
    task = get_task(task_name)
    return frozenset(
        p.question for p in task.problems(spec.data.num_problems, seed=data_stage_seed(spec))
    )


def held_out_problems(spec: RunSpec, task_name: str, n: int) -> list[Problem]:
    """Up to `n` distinct test problems of a task (fewer only when the split runs out)."""
    use_datasets(spec.datasets)
    task = get_task(task_name)
    split = eval_split(task)
    seen = set(training_questions(spec, task_name))
    wanted = n
    for _ in range(MAX_DOUBLINGS + 1):
        drawn = task.problems(wanted, seed=spec.seed, split=split)
        kept = _distinct(drawn, seen)
        if len(kept) >= n or len(drawn) < wanted:
            return kept[:n]
        wanted *= 2
    return kept[:n]


def _distinct(problems: list[Problem], excluded: set[str]) -> list[Problem]:
    kept: list[Problem] = []
    questions = set(excluded)
    for problem in problems:
        if problem.question not in questions:
            questions.add(problem.question)
            kept.append(problem)
    return kept
