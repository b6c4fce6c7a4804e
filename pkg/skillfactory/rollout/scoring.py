"""Rewards of sampled groups: one batched scorer shape for every sampler.

A `GroupScorer` takes several groups' completions with their problems and answers one reward per
completion. `local_scorer` grades in this process with each problem's task grader (binary
correctness, no format reward); the reward service's client has the same shape. A problem that
cannot be graded (unknown task, missing field) scores 0, as the reward service's per-record errors
do. `per_completion` adapts a function of one completion (tests, benchmarks with a synthetic
reward).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from skillfactory.engines.base import Completion
from skillfactory.tasks import Problem, ProblemFieldError, UnknownTaskError, get_task, grade

log = logging.getLogger(__name__)

GroupScorer = Callable[[Sequence[tuple[Problem, Sequence[Completion]]]], list[list[float]]]
"""Rewards of every completion of several groups (one list per group, in order)."""

CompletionReward = Callable[[Problem, Completion], float]
"""The reward of one completion of a problem."""


def correctness(problem: Problem, completion: Completion) -> float:
    """1.0 when the last `<answer>` is right, else 0.0; 0.0 for a problem that cannot be graded."""
    try:
        return 1.0 if grade(get_task(problem.task), problem, completion.text).correct else 0.0
    except (UnknownTaskError, ProblemFieldError):
        log.warning("ungradable record scored 0", extra={"task": problem.task})
        return 0.0


def per_completion(reward: CompletionReward) -> GroupScorer:
    """A batched scorer that applies `reward` to every completion."""

    def score(groups: Sequence[tuple[Problem, Sequence[Completion]]]) -> list[list[float]]:
        return [[reward(problem, c) for c in completions] for problem, completions in groups]

    return score


def local_scorer() -> GroupScorer:
    """Binary correctness graded in this process with the task graders."""
    return per_completion(correctness)
