"""The decoupled-PPO GRPO loss on hand-computed examples: clipping, importance-weight truncation,
on-policy reduction, the three aggregations, k3 KL, and where gradients flow."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from skillfactory.runspec import GRPOSpec
from skillfactory.train.grpo_loss import (
    GRPOLossConfig,
    grpo_policy_loss,
    importance_weight,
)


def logs(*probs: float) -> list[float]:
    """Natural logs of probabilities, so examples read as probabilities."""
    return [math.log(p) for p in probs]


def flat(grad: Tensor | None) -> list[float]:
    """A gradient as a flat list, row by row, for `pytest.approx`."""
    assert grad is not None
    return grad.flatten().tolist()


def column(values: list[float], requires_grad: bool = False) -> Tensor:
    """A [B, 1] tensor: one completion token per row."""
    return torch.tensor([[v] for v in values], dtype=torch.float64, requires_grad=requires_grad)


def test_clip_at_eps_low_and_eps_high() -> None:
    # proximal = behaviour = 0.4 for every token; π_θ = 0.6, 0.2, 0.6, 0.2 → r = 1.5, 0.5, 1.5, 0.5.
    # ε_low 0.2 → clip range [0.8, 1.28] with ε_high 0.28.
    #   r 1.5, A +1: −min(1.5, 1.28) = −1.28   clipped, no gradient
    #   r 0.5, A −1: −min(−0.5, −0.8) = 0.8    clipped, no gradient
    #   r 1.5, A −1: −min(−1.5, −1.28) = 1.5   d/dlogp = −A·r = 1.5
    #   r 0.5, A +1: −min(0.5, 0.8) = −0.5     d/dlogp = −A·r = −0.5
    # token-mean over 4: (−1.28 + 0.8 + 1.5 − 0.5) / 4 = 0.13; gradients / 4.
    config = GRPOLossConfig(clip_eps_low=0.2, clip_eps_high=0.28)
    logprobs = column(logs(0.6, 0.2, 0.6, 0.2), requires_grad=True)
    old = column(logs(0.4, 0.4, 0.4, 0.4))
    advantages = torch.tensor([1.0, -1.0, -1.0, 1.0])
    out = grpo_policy_loss(logprobs, old, old, advantages, torch.ones(4, 1), config)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(0.13)
    assert logprobs.grad is not None
    assert logprobs.grad[:, 0].tolist() == pytest.approx([0.0, 0.0, 0.375, -0.125])
    assert out.clip_fraction.item() == pytest.approx(0.5)
    assert out.ratio_mean.item() == pytest.approx(1.0)
    assert out.importance_weight_mean.item() == 1.0
    assert out.truncated_fraction.item() == 0.0


def test_importance_weight_is_truncated_at_cap() -> None:
    # On-policy ratio (π_θ = π_prox) so r = 1 and each token's loss is −w·A with A = +1.
    #   π_prox 0.6, π_behav 0.2 → w = 3    → truncated to the cap 2
    #   π_prox 0.3, π_behav 0.6 → w = 0.5
    #   π_prox 0.5, π_behav 0.4 → w = 1.25
    # token-mean: −(2 + 0.5 + 1.25) / 3 = −1.25; d/dlogp = −w / 3.
    config = GRPOLossConfig(importance_weight_cap=2.0)
    proximal = column(logs(0.6, 0.3, 0.5))
    logprobs = proximal.clone().requires_grad_(True)
    behaviour = column(logs(0.2, 0.6, 0.4))
    out = grpo_policy_loss(logprobs, proximal, behaviour, torch.ones(3), torch.ones(3, 1), config)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(-1.25)
    assert logprobs.grad is not None
    assert logprobs.grad[:, 0].tolist() == pytest.approx([-2 / 3, -0.5 / 3, -1.25 / 3])
    assert out.importance_weight_mean.item() == pytest.approx(1.25)
    assert out.truncated_fraction.item() == pytest.approx(1 / 3)
    assert out.clip_fraction.item() == 0.0


def test_importance_weight_weighs_the_clipped_surrogate() -> None:
    # π_behav 0.25, π_prox 0.5 → w = 2 (at the cap, not above it); π_θ 0.9 → r = 1.8, A = +1,
    # clipped to 1.2 → loss −2 · 1.2 = −2.4, no gradient (clipped).
    config = GRPOLossConfig(importance_weight_cap=2.0)
    logprobs = column(logs(0.9), requires_grad=True)
    out = grpo_policy_loss(
        logprobs, column(logs(0.5)), column(logs(0.25)), torch.ones(1), torch.ones(1, 1), config
    )
    out.loss.backward()
    assert out.loss.item() == pytest.approx(-2.4)
    assert logprobs.grad is not None
    assert logprobs.grad.tolist() == [[0.0]]
    assert out.truncated_fraction.item() == 0.0
    assert out.clip_fraction.item() == 1.0


def ppo_clip_grpo(
    logprobs: Tensor, old: Tensor, advantages: Tensor, mask: Tensor, eps: float
) -> Tensor:
    """Textbook PPO-clip GRPO with token-mean aggregation, written out independently."""
    ratio = torch.exp(logprobs - old)
    a = advantages[:, None]
    surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - eps, 1 + eps) * a)
    return -(surrogate * mask).sum() / mask.sum()


def test_on_policy_reduces_exactly_to_ppo_clip_grpo() -> None:
    generator = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 6, generator=generator, dtype=torch.float64) * 3
    logprobs = old + 0.3 * torch.randn(4, 6, generator=generator, dtype=torch.float64)
    advantages = torch.tensor([1.5, -0.5, -0.5, -0.5], dtype=torch.float64)
    mask = torch.tensor([[1.0] * 6, [1.0] * 4 + [0.0] * 2, [1.0] * 2 + [0.0] * 4, [1.0] * 5 + [0]])
    ours = logprobs.clone().requires_grad_(True)
    textbook = logprobs.clone().requires_grad_(True)

    out = grpo_policy_loss(ours, old, old, advantages, mask, GRPOLossConfig())
    expected = ppo_clip_grpo(textbook, old, advantages, mask, eps=0.2)
    out.loss.backward()
    expected.backward()

    assert torch.equal(out.loss, expected)
    assert ours.grad is not None and textbook.grad is not None
    assert torch.allclose(ours.grad, textbook.grad, rtol=1e-12, atol=0.0)
    assert out.importance_weight_mean.item() == 1.0
    assert out.truncated_fraction.item() == 0.0


def test_importance_weight_is_exactly_one_on_policy() -> None:
    proximal = torch.tensor([[-0.1234567, -7.654321, -20.0]])
    assert torch.equal(importance_weight(proximal, proximal.clone(), cap=2.0), torch.ones(1, 3))


def test_first_micro_batch_of_a_step_is_minus_mean_advantage() -> None:
    # At the start of a step π_θ = π_prox = π_behav: r = 1, loss = −mean_t A, dloss/dlogp = −A / N.
    lp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], dtype=torch.float64)
    logprobs = lp.clone().requires_grad_(True)
    out = grpo_policy_loss(
        logprobs, lp, lp, torch.tensor([2.0, -1.0]), torch.ones(2, 2), GRPOLossConfig()
    )
    out.loss.backward()
    assert out.loss.item() == pytest.approx(-0.5)  # −(2 + 2 − 1 − 1) / 4
    assert flat(logprobs.grad) == pytest.approx([-0.5, -0.5, 0.25, 0.25])


# Two sequences of lengths 3 and 1 (T = 3); on-policy, r = 1 so each token's loss is −A:
# sequence 1 has A = +1 (token losses −1, −1, −1), sequence 2 has A = −2 (token loss +2).
# Padding positions hold junk logprobs that the mask must hide.
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
ADVANTAGES = torch.tensor([1.0, -2.0])
LOGPROBS = torch.tensor([[-0.5, -1.0, -2.0], [-0.7, 50.0, -50.0]], dtype=torch.float64)


def two_sequence_loss(config: GRPOLossConfig) -> tuple[float, list[float]]:
    logprobs = LOGPROBS.clone().requires_grad_(True)
    out = grpo_policy_loss(logprobs, LOGPROBS, LOGPROBS, ADVANTAGES, MASK, config)
    out.loss.backward()
    assert logprobs.grad is not None
    return out.loss.item(), flat(logprobs.grad)


def test_token_mean_normalises_by_all_tokens() -> None:
    # (−1 − 1 − 1 + 2) / 4 tokens = −0.25; dloss/dlogp = −A / 4
    loss, grad = two_sequence_loss(GRPOLossConfig(loss_type="token-mean"))
    assert loss == pytest.approx(-0.25)
    assert grad == pytest.approx([-0.25, -0.25, -0.25, 0.5, 0.0, 0.0])


def test_sequence_mean_normalises_per_sequence() -> None:
    # (mean(−1, −1, −1) + mean(2)) / 2 sequences = (−1 + 2) / 2 = 0.5; dloss/dlogp = −A / (len · 2)
    loss, grad = two_sequence_loss(GRPOLossConfig(loss_type="sequence-mean"))
    assert loss == pytest.approx(0.5)
    assert grad == pytest.approx([-1 / 6, -1 / 6, -1 / 6, 1.0, 0.0, 0.0])


def test_dr_grpo_normalises_by_constant_length() -> None:
    # (−3 + 2) / (2 sequences × max_completion_length 4) = −0.125; dloss/dlogp = −A / 8
    loss, grad = two_sequence_loss(GRPOLossConfig(loss_type="dr-grpo", max_completion_length=4))
    assert loss == pytest.approx(-0.125)
    assert grad == pytest.approx([-0.125, -0.125, -0.125, 0.25, 0.0, 0.0])


@pytest.mark.parametrize(
    ("loss_type", "expected"), [("token-mean", -0.25), ("sequence-mean", 0.5), ("dr-grpo", -0.125)]
)
def test_micro_batches_sum_to_the_step_loss(loss_type: str, expected: float) -> None:
    # Each sequence alone, normalised by the step's 4 tokens / 2 sequences:
    # token-mean −3/4 + 2/4; sequence-mean −1/2 + 2/2; dr-grpo −3/8 + 2/8.
    config = GRPOLossConfig(loss_type=loss_type, max_completion_length=4)  # type: ignore[arg-type]
    total = 0.0
    for row in (0, 1):
        part = slice(row, row + 1)
        lp = LOGPROBS[part]
        out = grpo_policy_loss(
            lp, lp, lp, ADVANTAGES[part], MASK[part], config, num_tokens=4, num_sequences=2
        )
        total += out.loss.item()
    assert total == pytest.approx(expected)


def test_per_token_advantages() -> None:
    # A given per token [B, T]: −(1 + 3 − 2) / 3 tokens = −2/3
    lp = torch.zeros(1, 3)
    out = grpo_policy_loss(
        lp, lp, lp, torch.tensor([[1.0, 3.0, -2.0]]), torch.ones(1, 3), GRPOLossConfig()
    )
    assert out.loss.item() == pytest.approx(-2 / 3)


def test_k3_kl_value_and_gradient() -> None:
    # A = 0 so only β·k3 remains. k3 = exp(ref − logp) − (ref − logp) − 1:
    #   logp = log 0.5,  ref = log 0.25: exp(−ln 2) + ln 2 − 1 = 0.5 + 0.693147 − 1 = 0.193147
    #   logp = log 0.25, ref = log 0.5:  exp(ln 2) − ln 2 − 1 = 2 − 0.693147 − 1 = 0.306853
    # mean k3 = 0.5 / 2 = 0.25; loss = β · 0.25 = 0.025 with β = 0.1.
    # d k3 / d logp = 1 − exp(ref − logp): 1 − 0.5 = 0.5 and 1 − 2 = −1; times β / 2 tokens.
    config = GRPOLossConfig(kl_beta=0.1)
    lp = torch.tensor([logs(0.5, 0.25)], dtype=torch.float64)
    ref = torch.tensor([logs(0.25, 0.5)], dtype=torch.float64)
    logprobs = lp.clone().requires_grad_(True)
    out = grpo_policy_loss(
        logprobs, lp, lp, torch.zeros(1), torch.ones(1, 2), config, ref_logprobs=ref
    )
    out.loss.backward()
    assert out.kl.item() == pytest.approx(0.25)
    assert out.loss.item() == pytest.approx(0.025)
    assert out.policy_loss.item() == 0.0
    assert flat(logprobs.grad) == pytest.approx([0.025, -0.05])


def test_kl_needs_reference_logprobs() -> None:
    lp = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_policy_loss(lp, lp, lp, torch.zeros(1), torch.ones(1, 2), GRPOLossConfig(kl_beta=0.1))


def test_gradients_flow_only_through_logprobs() -> None:
    def leaf(values: list[list[float]]) -> Tensor:
        return torch.tensor(values, dtype=torch.float64, requires_grad=True)

    logprobs = leaf([[-0.2, -1.5], [-0.9, -0.1]])
    proximal = leaf([[-0.3, -1.2], [-1.0, -0.2]])
    behaviour = leaf([[-0.6, -1.0], [-1.1, -0.4]])
    ref = leaf([[-0.5, -1.1], [-0.8, -0.3]])
    advantages = torch.tensor([0.7, -0.7], dtype=torch.float64, requires_grad=True)
    config = GRPOLossConfig(kl_beta=0.05)
    out = grpo_policy_loss(
        logprobs, proximal, behaviour, advantages, torch.ones(2, 2), config, ref_logprobs=ref
    )
    out.loss.backward()
    assert logprobs.grad is not None and bool(logprobs.grad.abs().sum() > 0)
    for other in (proximal, behaviour, ref, advantages):
        assert other.grad is None
    for metric in (out.policy_loss, out.kl, out.clip_fraction, out.importance_weight_mean):
        assert not metric.requires_grad
    assert set(out.metrics()) == {
        "loss",
        "policy_loss",
        "kl",
        "clip_fraction",
        "ratio_mean",
        "importance_weight_mean",
        "truncated_fraction",
        "dual_clip_fraction",
        "entropy",
        "mismatch_ratio_mean",
        "mismatch_ratio_max",
    }


def test_shape_mismatch_is_an_error() -> None:
    lp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="mask"):
        grpo_policy_loss(lp, lp, lp, torch.zeros(2), torch.ones(2, 2), GRPOLossConfig())


def test_config_from_spec() -> None:
    spec = GRPOSpec(
        loss="dr-grpo",
        clip_eps_low=0.1,
        clip_eps_high=0.28,
        importance_weight_cap=5.0,
        kl_beta=0.04,
        max_response_length=256,
    )
    assert GRPOLossConfig.from_spec(spec) == GRPOLossConfig(
        loss_type="dr-grpo",
        clip_eps_low=0.1,
        clip_eps_high=0.28,
        importance_weight_cap=5.0,
        kl_beta=0.04,
        max_completion_length=256,
    )
    defaults = GRPOLossConfig.from_spec(GRPOSpec())
    assert (defaults.loss_type, defaults.clip_eps_low, defaults.kl_beta) == ("token-mean", 0.2, 0.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"loss_type": "mean"},
        {"clip_eps_low": 1.5},
        {"clip_eps_high": -0.1},
        {"importance_weight_cap": 0.5},
        {"kl_beta": -1.0},
        {"max_completion_length": 0},
    ],
)
def test_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        GRPOLossConfig(**bad)  # type: ignore[arg-type]


def test_kl_is_reported_without_being_added_when_beta_is_zero() -> None:
    # Same tokens as the k3 example: mean k3 0.25 reported, loss −mean A = −1 (A = +1, r = 1).
    lp = torch.tensor([logs(0.5, 0.25)], dtype=torch.float64)
    ref = torch.tensor([logs(0.25, 0.5)], dtype=torch.float64)
    out = grpo_policy_loss(
        lp, lp, lp, torch.ones(1), torch.ones(1, 2), GRPOLossConfig(), ref_logprobs=ref
    )
    assert out.kl.item() == pytest.approx(0.25)
    assert out.loss.item() == pytest.approx(-1.0)
