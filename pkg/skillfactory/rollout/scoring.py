"""Rewards of sampled groups: one batched scorer shape for every sampler.

A `GroupScorer` takes several groups' completions with their problems and answers one reward per
completion. `local_scorer` scores in this process by each problem's reward terms
(`skillfactory.tasks.rewards`: the task grader's binary correctness unless the run's
`grpo.rewards` says otherwise); the reward service's client has the same shape. A reward is a
`ScoredReward`: a float (the weighted sum) that also carries each term's value and the terms that
failed, which `make_group` keeps on the group for the step record. A problem that cannot be graded
(unknown task, missing field) scores 0, as the reward service's per-record errors do.
`per_completion` adapts a function of one completion (tests, benchmarks with a synthetic reward).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from skillfactory.engines.base import Completion
from skillfactory.tasks import Problem, ProblemFieldError, UnknownTaskError
from skillfactory.tasks.rewards import score_group

log = logging.getLogger(__name__)

GroupScorer = Callable[[Sequence[tuple[Problem, Sequence[Completion]]]], list[list[float]]]
"""Rewards of every completion of several groups (one list per group, in order)."""

CompletionReward = Callable[[Problem, Completion], float]
"""The reward of one completion of a problem."""


class ScoredReward(float):
    """A reward (the weighted sum of its terms) with each term's value and the failed terms."""

    terms: dict[str, float]
    failed: tuple[str, ...]

    def __new__(
        cls, value: float, terms: Mapping[str, float], failed: Sequence[str] = ()
    ) -> ScoredReward:
        reward = super().__new__(cls, value)
        reward.terms = dict(terms)
        reward.failed = tuple(failed)
        return reward


def correctness(problem: Problem, completion: Completion) -> float:
    """1.0 when the last `<answer>` is right, else 0.0; 0.0 for a problem that cannot be graded."""
    return score_completions(problem, [completion])[0]


def score_completions(
    problem: Problem, completions: Sequence[Completion], *, allow_plugins: bool = False
) -> list[float]:
    """Each completion's reward by the problem's terms; 0 for a problem that cannot be graded."""
    try:
        scored = score_group(
            problem,
            [c.text for c in completions],
            [len(c.token_ids) for c in completions],
            allow_plugins=allow_plugins,
        )
    except (UnknownTaskError, ProblemFieldError):
        log.warning("ungradable record scored 0", extra={"task": problem.task})
        return [0.0] * len(completions)
    if any(s.error is not None for s in scored):
        log.warning("ungradable record scored 0", extra={"task": problem.task})
    return [ScoredReward(s.value, s.terms, s.failed) for s in scored]


def per_completion(reward: CompletionReward) -> GroupScorer:
    """A batched scorer that applies `reward` to every completion."""

    def score(groups: Sequence[tuple[Problem, Sequence[Completion]]]) -> list[list[float]]:
        return [[reward(problem, c) for c in completions] for problem, completions in groups]

    return score


def local_scorer(*, allow_plugins: bool = False) -> GroupScorer:
    """Rewards by each problem's terms, scored in this process (binary correctness by default);
    plugin terms run only with `allow_plugins` (else they score 0 and count as failed)."""

    def score(groups: Sequence[tuple[Problem, Sequence[Completion]]]) -> list[list[float]]:
        return [
            score_completions(problem, completions, allow_plugins=allow_plugins)
            for problem, completions in groups
        ]

    return score
