"""A GRPO group: one prompt, its sampled completions and their rewards, tagged with the policy
version that sampled them. What samplers push to the queue and the learner trains on.

Pure Python (no torch). `skillfactory.wire.messages` converts it to and from
`skillfactory.v1.Group`, the queue payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from skillfactory.engines.base import Completion
from skillfactory.tasks.base import Problem


@dataclass
class Group:
    """One prompt's completions (same prompt tokens) and the reward of each, in order."""

    group_id: str
    """Unique id within the run, stable across restarts (e.g. `p17`: the 17th prompt drawn)."""
    problem: Problem
    """The problem the prompt asks."""
    prompt_token_ids: list[int]
    """Tokens of the rendered prompt, shared by every completion."""
    completions: list[Completion]
    """Sampled completions, each with its token ids, behaviour logprobs and policy version."""
    rewards: list[float]
    """Reward of each completion (1 correct, 0 not)."""
    sampler_id: str = ""
    """Which sampler produced it."""
    prompt_index: int = -1
    """Position of the prompt in the run's prompt stream."""
    epoch: str = ""
    """Learner incarnation whose rollout task asked for it (distributed mode; else empty)."""
    reward_terms: list[dict[str, float]] = field(default_factory=list)
    """Each completion's reward terms (`grpo.rewards`, unweighted); empty when not known."""
    failed_terms: list[tuple[str, ...]] = field(default_factory=list)
    """Each completion's terms that raised or timed out (scored 0); empty when not known."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form annotations (not sent over the wire)."""

    def __post_init__(self) -> None:
        if len(self.rewards) != len(self.completions):
            raise ValueError("a group needs one reward per completion")

    @property
    def policy_version(self) -> int:
        """The oldest policy version among the completions: how stale the group is."""
        return min((c.policy_version for c in self.completions), default=0)

    @property
    def mean_reward(self) -> float:
        """Mean reward of the group."""
        return sum(self.rewards) / len(self.rewards) if self.rewards else 0.0

    def term_values(self) -> dict[str, list[float]]:
        """Each reward term's values over the completions that carry terms."""
        values: dict[str, list[float]] = {}
        for terms in self.reward_terms:
            for name, value in terms.items():
                values.setdefault(name, []).append(value)
        return values

    def rewards_vary(self) -> bool:
        """Whether the rewards differ at all (a constant group has zero advantage everywhere)."""
        return len(set(self.rewards)) > 1


def reward_term_means(groups: Sequence[Group]) -> dict[str, float]:
    """Mean of each reward term over the groups' completions that carry it (by name, sorted)."""
    sums: dict[str, list[float]] = {}
    for group in groups:
        for name, values in group.term_values().items():
            sums.setdefault(name, []).extend(values)
    return {name: sum(v) / len(v) for name, v in sorted(sums.items())}


def reward_term_failures(groups: Sequence[Group]) -> dict[str, int]:
    """How many completions of the groups had each term fail (raised, timed out, not allowed)."""
    counts: dict[str, int] = {}
    for group in groups:
        for failed in group.failed_terms:
            for name in failed:
                counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))
