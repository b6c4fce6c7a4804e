"""Group-normalised advantages and the zero-variance group filter of GRPO.

Rewards arrive shaped `[groups, group_size]`: one row per prompt, one column per completion. A
completion's advantage is its reward relative to the other completions of the same prompt:

- GRPO: `(r - mean(group)) / (std(group) + eps)`, with the unbiased (n - 1) standard deviation as
  TRL's `GRPOTrainer` computes it;
- Dr.GRPO (`scale_by_std=False`): `r - mean(group)`, which removes the question-level difficulty
  bias of dividing by the standard deviation;
- leave-one-out (RLOO): `r_i - mean_{j≠i}(r_j)` = `G/(G−1) · (r_i − mean(group))`;
- batch scaling (`rollout_advantages(norm="batch")`, TRL `scale_rewards="batch"`): centred on the
  group mean, divided by the standard deviation of every reward of the rollout batch.

A group whose rewards are all equal has zero advantage everywhere and carries no gradient; with
`filter_zero_variance` on, the learner drops it (and admission control replaces it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from skillfactory.runspec import AdvantageNorm

ADVANTAGE_EPS = 1e-4
"""Added to the group standard deviation before dividing (TRL's value)."""


def _check_groups(rewards: Tensor) -> None:
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be shaped [groups, group_size], got {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ValueError("a group needs at least 2 completions to normalise advantages")


def group_advantages(
    rewards: Tensor,
    *,
    scale_by_std: bool = True,
    eps: float = ADVANTAGE_EPS,
    leave_one_out: bool = False,
) -> Tensor:
    """Advantages `[groups, group_size]`: rewards centred on their group mean, optionally scaled.

    `scale_by_std=True` is GRPO (divide by the group's unbiased std plus `eps`); `False` is
    Dr.GRPO (centre only). `leave_one_out` centres on the mean of the other completions (RLOO).
    A zero-variance group gets advantage 0 either way.
    """
    _check_groups(rewards)
    rewards = rewards.float()
    centred = _centred(rewards, leave_one_out)
    if not scale_by_std:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + eps)


def _centred(rewards: Tensor, leave_one_out: bool) -> Tensor:
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if leave_one_out:
        size = rewards.shape[1]
        centred = centred * (size / (size - 1))
    return centred


def rollout_advantages(
    rewards: Sequence[Sequence[float]],
    *,
    norm: AdvantageNorm = "group",
    leave_one_out: bool = False,
    eps: float = ADVANTAGE_EPS,
) -> list[list[float]]:
    """Advantages of a rollout batch's groups (one reward list per group; sizes may differ):
    centred per group (on the others' mean with `leave_one_out`), then divided by the group's
    std plus `eps` (`group`), by the std of every reward of the batch plus `eps` (`batch`), or
    not at all (`none`). Standard deviations are unbiased (n − 1), as TRL's."""
    centred = [
        _centred(torch.tensor([list(r)], dtype=torch.float32), leave_one_out) for r in rewards
    ]
    for row in rewards:
        _check_groups(torch.zeros(1, len(row)))
    if norm == "group":
        scaled = [
            c / (torch.tensor([list(r)], dtype=torch.float32).std(dim=1, keepdim=True) + eps)
            for c, r in zip(centred, rewards, strict=True)
        ]
    elif norm == "batch":
        every = torch.tensor([x for r in rewards for x in r], dtype=torch.float32)
        spread = every.std() if every.numel() > 1 else torch.tensor(0.0)
        scaled = [c / (spread + eps) for c in centred]
    else:
        scaled = centred
    return [row[0].tolist() for row in scaled]


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
