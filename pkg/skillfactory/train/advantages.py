"""Group-normalised advantages and the zero-variance group filter of GRPO.

Rewards arrive shaped `[groups, group_size]`: one row per prompt, one column per completion. A
completion's advantage is its reward relative to the other completions of the same prompt:

- GRPO: `(r - mean(group)) / (std(group) + eps)`, with the unbiased (n - 1) standard deviation as
  TRL's `GRPOTrainer` computes it;
- Dr.GRPO (`scale_by_std=False`): `r - mean(group)`, which removes the question-level difficulty
  bias of dividing by the standard deviation.

A group whose rewards are all equal has zero advantage everywhere and carries no gradient; with
`filter_zero_variance` on, the learner drops it (and admission control replaces it).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

ADVANTAGE_EPS = 1e-4
"""Added to the group standard deviation before dividing (TRL's value)."""


def _check_groups(rewards: Tensor) -> None:
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be shaped [groups, group_size], got {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ValueError("a group needs at least 2 completions to normalise advantages")


def group_advantages(
    rewards: Tensor, *, scale_by_std: bool = True, eps: float = ADVANTAGE_EPS
) -> Tensor:
    """Advantages `[groups, group_size]`: rewards centred on their group mean, optionally scaled.

    `scale_by_std=True` is GRPO (divide by the group's unbiased std plus `eps`); `False` is
    Dr.GRPO (centre only). A zero-variance group gets advantage 0 either way.
    """
    _check_groups(rewards)
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale_by_std:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + eps)


@dataclass(frozen=True)
class ZeroVarianceGroups:
    """Which groups carry a learning signal: `keep[g]` is False when group g's rewards are equal."""

    keep: Tensor
    """Bool `[groups]`: True for groups with at least two different rewards."""
    dropped: int
    """Number of zero-variance groups (`keep` False)."""


def zero_variance_groups(rewards: Tensor, *, atol: float = 0.0) -> ZeroVarianceGroups:
    """Detect groups whose rewards all lie within `atol` of each other (max − min ≤ atol)."""
    _check_groups(rewards)
    spread = rewards.amax(dim=1) - rewards.amin(dim=1)
    keep = spread > atol
    return ZeroVarianceGroups(keep=keep, dropped=int((~keep).sum().item()))
