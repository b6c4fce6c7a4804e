"""Issue 17 item 6: engine and learner logprobs at the sampling temperature, the engine/learner
importance correction at staleness 0, and the mismatch metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from skillfactory.engines.base import SamplingParams
from skillfactory.group import Group
from skillfactory.runspec import GRPOSpec
from skillfactory.tasks.base import Problem
from skillfactory.train.grpo_loss import GRPOLossConfig, grpo_policy_loss
from skillfactory.train.rollout_batch import collate_groups
from skillfactory.train.token_logprobs import chunked_completion_logprobs, token_logprobs

PROBLEM = Problem(id="q", task="countdown-3", question="?", answer="1", data={"numbers": [1, 2]})


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Any:
    from skillfactory.engines.transformers_engine import TransformersEngine

    return TransformersEngine(tiny_model_dir, device="cpu", max_batch_size=4)


def test_engine_and_learner_logprobs_agree_at_temperature_0_7(engine: Any) -> None:
    """One completion sampled at T = 0.7 (top-p 0.9: truncation changes what is drawn, not the
    logprobs): the engine's logprobs equal the learner's chunked ones at T = 0.7 within 1e-4
    (fp32), and both differ from the temperature-1 values."""
    params = SamplingParams(n=1, max_tokens=16, temperature=0.7, top_p=0.9, seed=5)
    ((completion,),) = engine.generate(["Count to ten: one, two,"], params)
    assert len(completion.token_ids) >= 4
    group = Group("g", PROBLEM, completion.prompt_token_ids, [completion], [1.0])
    batch = collate_groups([group], [[0.0]], 0, 0)
    model = engine.model
    with torch.no_grad():
        hot = chunked_completion_logprobs(model, batch, temperature=0.7, chunk_tokens=3)
        plain = chunked_completion_logprobs(model, batch, chunk_tokens=3)
    engine_logprobs = torch.tensor(completion.logprobs)
    learner = hot.logprobs[0, : len(completion.token_ids)].float()
    at_one = plain.logprobs[0, : len(completion.token_ids)].float()
    assert (engine_logprobs - learner).abs().max().item() < 1e-4
    assert (engine_logprobs - at_one).abs().max().item() > 1e-2
    assert (learner - at_one).abs().max().item() > 1e-2


def test_temperature_head_matches_scaled_log_softmax_with_gradients() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False).double()
    hidden = torch.randn(7, 8, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 50, (7,))
    ours = token_logprobs(hidden, head, tokens, chunk_tokens=3, with_entropy=True, temperature=0.6)
    ours.logprobs.sum().backward()
    our_hidden, our_weight = hidden.grad.clone(), head.weight.grad.clone()  # type: ignore[union-attr]
    hidden.grad, head.weight.grad = None, None
    logp = torch.log_softmax(head(hidden) / 0.6, dim=-1)
    expected = logp.gather(-1, tokens[:, None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    expected.sum().backward()
    torch.testing.assert_close(ours.logprobs, expected.detach())
    assert ours.entropy is not None
    torch.testing.assert_close(ours.entropy, entropy.detach())
    torch.testing.assert_close(our_hidden, hidden.grad)
    torch.testing.assert_close(our_weight, head.weight.grad)


def test_mismatch_metrics_by_hand() -> None:
    # proximal −1.0, −1.0; sampler −1.2, −0.9 → ratios e^0.2, e^−0.1 (third token is padding)
    proximal = torch.tensor([[-1.0, -1.0, 0.0]], dtype=torch.float64)
    sampler = torch.tensor([[-1.2, -0.9, -5.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    out = grpo_policy_loss(
        proximal,
        proximal,
        proximal,
        torch.tensor([1.0]),
        mask,
        GRPOLossConfig(),
        sampler_logprobs=sampler,
    )
    assert out.importance_weight_mean.item() == 1.0  # behaviour = proximal: uncorrected
    assert out.mismatch_ratio_mean.item() == pytest.approx((math.exp(0.2) + math.exp(-0.1)) / 2)
    assert out.mismatch_ratio_max.item() == pytest.approx(math.exp(0.2))
    corrected = grpo_policy_loss(
        proximal, proximal, sampler, torch.tensor([1.0]), mask, GRPOLossConfig()
    )
    # w = e^0.2, e^−0.1, r = 1, A = 1: token-mean loss −(e^0.2 + e^−0.1)/2
    assert corrected.loss.item() == pytest.approx(-(math.exp(0.2) + math.exp(-0.1)) / 2)
    assert corrected.mismatch_ratio_max.item() == pytest.approx(math.exp(0.2))


def make_group(logprob_shift: float, engine: Any) -> Group:
    params = SamplingParams(n=2, max_tokens=6, temperature=0.7, seed=9)
    (completions,) = engine.generate(["Count to ten: one, two,"], params)
    for c in completions:
        c.logprobs = [lp + logprob_shift for lp in c.logprobs]
    return Group(
        "g0", PROBLEM, completions[0].prompt_token_ids, completions, [1.0, 0.0], prompt_index=0
    )


@pytest.mark.parametrize("correct", [False, True], ids=["uncorrected", "corrected"])
def test_learner_corrects_staleness_0_only_when_asked(
    engine: Any, tiny_model_dir: Path, correct: bool
) -> None:
    """Engine logprobs lowered by 0.1 (a made-up mismatch): the step records the ratio e^0.1
    either way; only `correct_engine_mismatch` weights the staleness-0 tokens by it."""
    from test_learner import load_model

    from skillfactory.train.learner import GRPOLearner

    spec = GRPOSpec(
        temperature=0.7,
        max_staleness=0,
        correct_engine_mismatch=correct,
        prompts_per_step=1,
        mini_batch_size=1,
    )
    learner = GRPOLearner(load_model(tiny_model_dir), spec, pad_token_id=0)
    group = make_group(-0.1, engine)
    (update,) = learner.updates([group])
    (batch,) = update.micro_batches
    out = learner._loss(batch, update.num_tokens, update.num_sequences)
    assert out.mismatch_ratio_mean.item() == pytest.approx(math.exp(0.1), abs=2e-4)
    assert out.mismatch_ratio_max.item() == pytest.approx(math.exp(0.1), abs=2e-4)
    expected_weight = math.exp(0.1) if correct else 1.0
    assert out.importance_weight_mean.item() == pytest.approx(expected_weight, abs=2e-4)
    record = learner.train_step([group])
    assert record.mismatch_ratio_mean == pytest.approx(math.exp(0.1), abs=2e-4)
    assert record.mismatch_ratio_max == pytest.approx(math.exp(0.1), abs=2e-4)
    assert record.importance_weight_mean == pytest.approx(expected_weight, abs=2e-4)
