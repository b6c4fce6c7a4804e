"""Group-normalised advantages and the zero-variance filter, on hand-computed rewards."""

from __future__ import annotations

import pytest
import torch

from skillfactory.train.advantages import group_advantages, zero_variance_groups


def test_grpo_advantage_one_correct_of_four() -> None:
    # mean 0.25; unbiased std sqrt((0.75² + 3·0.25²) / 3) = sqrt(0.75 / 3) = 0.5
    # → (1 − 0.25) / 0.5 = 1.5 and (0 − 0.25) / 0.5 = −0.5
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    advantages = group_advantages(rewards, eps=0.0)
    assert advantages.tolist() == [[1.5, -0.5, -0.5, -0.5]]


def test_grpo_advantage_default_eps() -> None:
    # 0.75 / (0.5 + 1e-4) = 1.4997000599880024
    advantages = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert advantages[0, 0].item() == pytest.approx(1.4997000599880024, rel=1e-6)


def test_grpo_advantage_half_correct_groups_are_independent() -> None:
    # group 1: mean 0.5, unbiased std sqrt(4 · 0.5² / 3) = 1/√3 → ±0.5·√3 = ±0.8660254
    # group 2: mean 3, unbiased std sqrt(4 · 1² / 3) = 1.1547005 → ±1 / 1.1547005 = ±0.8660254
    rewards = torch.tensor([[1.0, 1.0, 0.0, 0.0], [2.0, 4.0, 2.0, 4.0]])
    advantages = group_advantages(rewards, eps=0.0)
    expected = [[0.8660254, 0.8660254, -0.8660254, -0.8660254], [-0.8660254, 0.8660254] * 2]
    assert torch.allclose(advantages, torch.tensor(expected), atol=1e-6)


def test_dr_grpo_advantage_only_centres() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert group_advantages(rewards, scale_by_std=False).tolist() == [[0.75, -0.25, -0.25, -0.25]]


def test_zero_variance_group_has_zero_advantage() -> None:
    # (1 − 1) / (0 + 1e-4) = 0
    assert group_advantages(torch.tensor([[1.0, 1.0, 1.0]])).tolist() == [[0.0, 0.0, 0.0]]


def test_zero_variance_filter_mask_and_count() -> None:
    rewards = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 1.0]])
    groups = zero_variance_groups(rewards)
    assert groups.keep.tolist() == [False, False, True]
    assert groups.dropped == 2


def test_zero_variance_filter_tolerance() -> None:
    rewards = torch.tensor([[0.5, 0.5 + 1e-9], [0.0, 1.0]], dtype=torch.float64)
    assert zero_variance_groups(rewards).keep.tolist() == [True, True]
    assert zero_variance_groups(rewards, atol=1e-6).keep.tolist() == [False, True]


@pytest.mark.parametrize("shape", [(4,), (3, 1)])
def test_rewards_must_be_groups(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(shape))
