"""Issue 17's loss options on hand-computed values: GSPO's sequence-level ratio, dual-clip, the
k1/k2/k3 KL estimators and `kl_in_reward`, advantage normalisation (group, batch, none) and the
leave-one-out baseline, and the entropy metric."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

from skillfactory.runspec import GRPOSpec
from skillfactory.train.advantages import group_advantages, rollout_advantages
from skillfactory.train.grpo_loss import GRPOLossConfig, grpo_policy_loss, kl_estimate


def row(*values: float, requires_grad: bool = False) -> Tensor:
    """A [1, T] float64 tensor: one completion."""
    return torch.tensor([list(values)], dtype=torch.float64, requires_grad=requires_grad)


def test_gspo_uses_one_geometric_mean_ratio_per_sequence() -> None:
    # log-ratios 0.1 and 0.3 → sequence ratio e^0.2 = 1.2214 > 1 + 0.2: clipped for A = +1, so
    # every token's loss is −1.2 and no gradient flows; token-level would clip only token 2.
    proximal = row(-1.0, -2.0)
    logprobs = row(-0.9, -1.7, requires_grad=True)
    mask = row(1.0, 1.0)
    config = GRPOLossConfig(importance_level="sequence")
    out = grpo_policy_loss(logprobs, proximal, proximal, torch.tensor([1.0]), mask, config)
    assert out.loss.item() == pytest.approx(-1.2)
    assert out.ratio_mean.item() == pytest.approx(math.exp(0.2))
    assert out.clip_fraction.item() == 1.0
    out.loss.backward()
    assert logprobs.grad is not None and logprobs.grad.abs().sum().item() == 0.0

    token = grpo_policy_loss(
        logprobs, proximal, proximal, torch.tensor([1.0]), mask, GRPOLossConfig()
    )
    assert token.loss.item() == pytest.approx(-(math.exp(0.1) + 1.2) / 2)
    assert token.clip_fraction.item() == 0.5


def test_gspo_gradient_spreads_the_sequence_ratio_over_its_tokens() -> None:
    # log-ratios 0.05 each (padding ignored) → r = e^0.05 unclipped, A = 2: token-mean loss
    # −r·A; d/dlogp_t = −A·r/2 for each of the two real tokens, 0 on padding.
    proximal = row(-1.0, -1.0, 0.0)
    logprobs = row(-0.95, -0.95, 5.0, requires_grad=True)
    mask = row(1.0, 1.0, 0.0)
    config = GRPOLossConfig(importance_level="sequence")
    out = grpo_policy_loss(logprobs, proximal, proximal, torch.tensor([2.0]), mask, config)
    r = math.exp(0.05)
    assert out.loss.item() == pytest.approx(-2 * r)
    out.loss.backward()
    assert logprobs.grad is not None
    assert logprobs.grad.tolist() == [pytest.approx([-r, -r, 0.0])]


def test_dual_clip_bounds_negative_advantage_tokens() -> None:
    # Token ratios e^1.5 = 4.48 and e^0.5 = 1.65 with A = −1: PPO-clip losses 4.48 and 1.65
    # (the unclipped branch wins for r > 1 when A < 0); clip_c 3 caps the first at 3.
    proximal = row(-3.0, -3.0)
    logprobs = row(-1.5, -2.5, requires_grad=True)
    mask = row(1.0, 1.0)
    advantage = torch.tensor([-1.0])
    plain = grpo_policy_loss(logprobs, proximal, proximal, advantage, mask, GRPOLossConfig())
    assert plain.loss.item() == pytest.approx((math.exp(1.5) + math.exp(0.5)) / 2)
    assert plain.dual_clip_fraction.item() == 0.0
    dual = grpo_policy_loss(
        logprobs, proximal, proximal, advantage, mask, GRPOLossConfig(clip_c=3.0)
    )
    assert dual.loss.item() == pytest.approx((3.0 + math.exp(0.5)) / 2)
    assert dual.dual_clip_fraction.item() == 0.5
    dual.loss.backward()
    assert logprobs.grad is not None
    assert logprobs.grad.tolist() == [pytest.approx([0.0, math.exp(0.5) / 2])]


def test_dual_clip_leaves_positive_advantages_alone() -> None:
    proximal = row(-3.0)
    logprobs = row(-1.5)
    advantage = torch.tensor([1.0])
    plain = grpo_policy_loss(logprobs, proximal, proximal, advantage, row(1.0), GRPOLossConfig())
    dual = grpo_policy_loss(
        logprobs, proximal, proximal, advantage, row(1.0), GRPOLossConfig(clip_c=3.0)
    )
    assert dual.loss.item() == plain.loss.item() == pytest.approx(-1.2)


def test_dual_clip_must_exceed_one() -> None:
    with pytest.raises(ValueError, match="clip_c"):
        GRPOLossConfig(clip_c=1.0)


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [("k1", 0.5), ("k2", 0.125), ("k3", math.exp(-0.5) + 0.5 - 1.0)],
)
def test_kl_estimators(estimator: str, expected: float) -> None:
    # logp −1.0, ref −1.5: k1 = 0.5, k2 = ½·0.25, k3 = e^−0.5 + 0.5 − 1
    value = kl_estimate(row(-1.0), row(-1.5), estimator)  # type: ignore[arg-type]
    assert value.item() == pytest.approx(expected)
    config = GRPOLossConfig(kl_beta=0.1, kl_estimator=estimator)  # type: ignore[arg-type]
    lp = row(-1.0)
    out = grpo_policy_loss(
        lp, lp, lp, torch.tensor([0.0]), row(1.0), config, ref_logprobs=row(-1.5)
    )
    assert out.kl.item() == pytest.approx(expected)
    assert out.loss.item() == pytest.approx(0.1 * expected)


def test_kl_in_reward_keeps_the_kl_out_of_the_loss() -> None:
    lp = row(-1.0)
    config = GRPOLossConfig(kl_beta=0.1, kl_in_reward=True)
    out = grpo_policy_loss(
        lp, lp, lp, torch.tensor([1.0]), row(1.0), config, ref_logprobs=row(-1.5)
    )
    assert out.loss.item() == pytest.approx(-1.0)  # the policy term alone
    assert out.kl.item() == pytest.approx(math.exp(-0.5) - 0.5)


def test_entropy_is_a_masked_token_mean() -> None:
    lp = row(-1.0, -1.0, 0.0)
    out = grpo_policy_loss(
        lp,
        lp,
        lp,
        torch.tensor([1.0]),
        row(1.0, 1.0, 0.0),
        GRPOLossConfig(),
        entropy=row(2.0, 1.0, 9.0),
    )
    assert out.entropy.item() == pytest.approx(1.5)
    assert out.metrics()["entropy"] == pytest.approx(1.5)


REWARDS = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]


def test_group_norm_divides_by_each_group_std() -> None:
    # group 1: mean 0.25, unbiased std 0.5; group 2: mean 0.5, std 1/√3 ≈ 0.57735
    result = rollout_advantages(REWARDS, norm="group", eps=0.0)
    s2 = math.sqrt(1 / 3)
    assert result == [
        pytest.approx([1.5, -0.5, -0.5, -0.5]),
        pytest.approx([0.5 / s2, 0.5 / s2, -0.5 / s2, -0.5 / s2]),
    ]
    default = rollout_advantages(REWARDS)
    expected = group_advantages(torch.tensor(REWARDS)).tolist()
    assert default == [pytest.approx(r) for r in expected]


def test_batch_norm_divides_by_the_std_of_every_reward() -> None:
    # all 8 rewards: mean 0.375, unbiased variance (3·0.625² + 5·0.375²)/7 = 1.875/7
    std = math.sqrt(1.875 / 7)
    result = rollout_advantages(REWARDS, norm="batch", eps=0.0)
    assert result == [
        pytest.approx([0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std]),
        pytest.approx([0.5 / std, 0.5 / std, -0.5 / std, -0.5 / std]),
    ]


def test_none_only_centres() -> None:
    assert rollout_advantages(REWARDS, norm="none") == [
        pytest.approx([0.75, -0.25, -0.25, -0.25]),
        pytest.approx([0.5, 0.5, -0.5, -0.5]),
    ]


def test_leave_one_out_centres_on_the_others_mean() -> None:
    # r_i − mean of the 3 others: [1 − 0, 0 − 1/3, …] and [1 − 1/3, 1 − 1/3, 0 − 2/3, 0 − 2/3]
    assert rollout_advantages(REWARDS, norm="none", leave_one_out=True) == [
        pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3]),
        pytest.approx([2 / 3, 2 / 3, -2 / 3, -2 / 3]),
    ]
    loo = group_advantages(torch.tensor(REWARDS), scale_by_std=False, leave_one_out=True)
    assert loo[0].tolist() == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3])


def test_constant_groups_have_zero_advantage_under_every_norm() -> None:
    for norm in ("group", "batch", "none"):
        result = rollout_advantages([[1.0, 1.0], [0.0, 1.0]], norm=norm, leave_one_out=True)  # type: ignore[arg-type]
        assert result[0] == [0.0, 0.0]


def test_config_from_spec_carries_the_options() -> None:
    spec = GRPOSpec(importance_level="sequence", clip_c=3.0, kl_estimator="k1", kl_in_reward=True)
    config = GRPOLossConfig.from_spec(spec)
    assert (config.importance_level, config.clip_c, config.kl_estimator, config.kl_in_reward) == (
        "sequence",
        3.0,
        "k1",
        True,
    )


def test_defaults_keep_todays_behaviour() -> None:
    spec = GRPOSpec()
    assert (spec.importance_level, spec.clip_c, spec.kl_estimator, spec.kl_in_reward) == (
        "token",
        None,
        "k3",
        False,
    )
    assert (spec.advantage_norm, spec.leave_one_out) == (None, False)


def test_learner_advantage_norm_default_follows_the_loss(tiny_model_dir: Path) -> None:
    from test_learner import learner_on, make_group

    groups = [make_group(0, REWARDS[0]), make_group(1, REWARDS[1])]
    assert learner_on(tiny_model_dir).advantage_norm == "group"
    assert learner_on(tiny_model_dir, loss="dr-grpo").advantage_norm == "none"
    batch = learner_on(tiny_model_dir, advantage_norm="batch").advantages(groups)
    assert batch == rollout_advantages(REWARDS, norm="batch")
    rloo = learner_on(tiny_model_dir, advantage_norm="none", leave_one_out=True)
    assert rloo.advantages(groups)[0] == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3])


def test_kl_in_reward_penalises_the_rewards_before_the_advantages(tiny_model_dir: Path) -> None:
    """With the reference equal to the policy the penalty is 0; with another reference each
    reward loses β·Σ_t k3_t of its completion, computed here by hand from the two models."""
    from test_learner import load_model, make_group

    from skillfactory.train.learner import GRPOLearner
    from skillfactory.train.rollout_batch import collate_groups, completion_logprobs

    groups = [make_group(0, REWARDS[0]), make_group(1, REWARDS[1])]
    ref = load_model(tiny_model_dir)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    learner = GRPOLearner(
        load_model(tiny_model_dir),
        GRPOSpec(
            kl_beta=0.5,
            kl_in_reward=True,
            learning_rate=1e-2,
            mini_batch_size=256,
            prompts_per_step=256,
        ),
        pad_token_id=0,
        ref_model=ref,
    )
    penalised = learner.kl_penalised_rewards(groups)
    zeros = [[0.0] * 4 for _ in groups]
    batch = collate_groups(groups, zeros, 0, 0)
    with torch.no_grad():
        policy = completion_logprobs(learner.model, batch)
        reference = completion_logprobs(ref, batch)
    sums = (kl_estimate(policy, reference, "k3") * batch.completion_mask).sum(dim=1)
    expected = [r - 0.5 * k for r, k in zip(REWARDS[0] + REWARDS[1], sums.tolist(), strict=True)]
    assert penalised[0] + penalised[1] == pytest.approx(expected, abs=1e-5)
    assert all(k > 0 for k in sums.tolist())
    record = learner.train_step(groups)
    assert record.kl > 0 and math.isfinite(record.entropy) and record.entropy > 0
