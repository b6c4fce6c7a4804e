"""Our GRPO loss against TRL's `GRPOTrainer._compute_loss` on identical batches.

One tiny model, one batch of prompts and completions with ragged completion masks, the same
advantages: TRL computes its per-token logprobs and loss, we compute per-token logprobs with a plain
forward and `grpo_policy_loss`; losses and every parameter's gradient must agree. Loss types are
paired as TRL dapo = token-mean, grpo = sequence-mean, dr_grpo = dr-grpo. With
`old_per_token_logps` given to TRL (ratios away from 1, some clipped), ours gets the same
logprobs as both proximal and behaviour, so every importance weight is 1. The KL cases compare
plain k3 (the GRPO paper's form, ours) with TRL's `use_bias_correction_kl=False`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from skillfactory.runspec import LossType
from skillfactory.train.grpo_loss import GRPOLossConfig, grpo_policy_loss

pytest.importorskip("trl")

PROMPT_LENGTH, COMPLETION_LENGTH, BATCH = 3, 5, 4
COMPLETION_MASK = torch.tensor(
    [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.long
)
ADVANTAGES = torch.tensor([1.5, -0.5, -0.5, -0.5])


def zero_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Rewards are never computed here: the batch and its advantages are given."""
    return [0.0] * len(completions)


@pytest.fixture(scope="module")
def trainer(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A GRPOTrainer on the tiny model, float32 (no bf16 autocast), one process, no accumulation."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("trl-grpo")),
        per_device_train_batch_size=BATCH,
        num_generations=BATCH,
        max_completion_length=COMPLETION_LENGTH,
        beta=0.0,
        use_bias_correction_kl=False,  # TRL's default weights k3 by the ratio; ours is plain k3
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
    )
    trainer: Any = GRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=zero_reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["the answer is"] * BATCH}),
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by training_step in a real run
    return trainer


def batch(vocab_size: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    prompt_ids = torch.randint(5, vocab_size, (BATCH, PROMPT_LENGTH), generator=generator)
    completion_ids = torch.randint(5, vocab_size, (BATCH, COMPLETION_LENGTH), generator=generator)
    return prompt_ids, completion_ids


def our_logprobs(model: Any, prompt_ids: Tensor, completion_ids: Tensor) -> Tensor:
    """Per-token logprobs of the completion under `model`, by a plain forward and log-softmax."""
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([torch.ones_like(prompt_ids), COMPLETION_MASK], dim=1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    logits = logits[:, PROMPT_LENGTH - 1 : -1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


def gradients(model: Any) -> dict[str, Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize(
    ("trl_loss", "our_loss"),
    [("dapo", "token-mean"), ("grpo", "sequence-mean"), ("dr_grpo", "dr-grpo")],
)
@pytest.mark.parametrize("old_shift", [None, 0.3], ids=["on-policy", "clipped"])
@pytest.mark.parametrize("kl_beta", [0.0, 0.1], ids=["no-kl", "kl"])
def test_loss_and_gradients_match_trl(
    trainer: Any, trl_loss: str, our_loss: LossType, old_shift: float | None, kl_beta: float
) -> None:
    model = trainer.model
    prompt_ids, completion_ids = batch(model.config.vocab_size)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        current = our_logprobs(model, prompt_ids, completion_ids)
    # Old logprobs shifted by ±0.3 alternately: ratios e^{∓0.3} = 0.74 / 1.35, outside [0.8, 1.2].
    signs = torch.tensor([1.0, -1.0]).repeat(BATCH, (COMPLETION_LENGTH + 1) // 2)
    signs = signs[:, :COMPLETION_LENGTH]
    old = None if old_shift is None else current + old_shift * signs
    ref = current - 0.2 * signs.flip(0)

    trainer.loss_type, trainer.beta = trl_loss, kl_beta
    inputs: dict[str, Tensor] = {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": COMPLETION_MASK,
        "advantages": ADVANTAGES,
        "num_items_in_batch": COMPLETION_MASK.sum(),
        "ref_per_token_logps": ref,
    }
    if old is not None:
        inputs["old_per_token_logps"] = old
    trl_loss_value = trainer._compute_loss(model, inputs)
    trl_loss_value.backward()
    trl_grads = gradients(model)

    config = GRPOLossConfig(
        loss_type=our_loss, kl_beta=kl_beta, max_completion_length=COMPLETION_LENGTH
    )
    logprobs = our_logprobs(model, prompt_ids, completion_ids)
    proximal = logprobs.detach() if old is None else old
    out = grpo_policy_loss(
        logprobs, proximal, proximal, ADVANTAGES, COMPLETION_MASK, config, ref_logprobs=ref
    )
    out.loss.backward()
    our_grads = gradients(model)

    if old is not None:
        assert out.clip_fraction.item() > 0.0  # the clipped branch is exercised
    assert out.loss.item() == pytest.approx(trl_loss_value.item(), rel=1e-5, abs=1e-7)
    assert our_grads.keys() == trl_grads.keys()
    for name, grad in trl_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("trl_loss", "our_loss"),
    [("dapo", "token-mean"), ("grpo", "sequence-mean"), ("dr_grpo", "dr-grpo")],
)
def test_the_learner_step_loss_matches_trl_on_an_on_policy_group(
    trainer: Any, trl_loss: str, our_loss: LossType
) -> None:
    """End to end through the learner: a group (one prompt, ragged completions) collated,
    logprobs with the prompt run once (shared KV cache), advantages, loss: TRL's value and
    gradients on the same batch."""
    from skillfactory.engines.base import Completion
    from skillfactory.group import Group
    from skillfactory.runspec import GRPOSpec
    from skillfactory.tasks.base import Problem
    from skillfactory.train.learner import GRPOLearner

    model = trainer.model
    prompt_ids, completion_ids = batch(model.config.vocab_size)
    prompt = prompt_ids[0].tolist()
    lengths = COMPLETION_MASK.sum(dim=1).tolist()
    completions = [
        Completion("", completion_ids[i, :n].tolist(), [-1.0] * n, "stop", 0, prompt)
        for i, n in enumerate(lengths)
    ]
    group = Group("p0", Problem("q", "t", "?", "a"), prompt, completions, [1.0, 0.0, 0.0, 0.0])
    spec = GRPOSpec(loss=our_loss, max_response_length=COMPLETION_LENGTH, max_staleness=0)
    learner = GRPOLearner(model, spec, pad_token_id=0)
    (advantages,) = learner.advantages([group])
    (update,) = learner.updates([group])
    (collated,) = update.micro_batches
    assert collated.group_size == 4

    model.zero_grad(set_to_none=True)
    ours = learner._loss(collated, sum(lengths), len(lengths))
    ours.loss.backward()
    our_grads = gradients(model)

    trainer.loss_type, trainer.beta = trl_loss, 0.0
    inputs: dict[str, Tensor] = {
        "prompt_ids": prompt_ids[:1].repeat(BATCH, 1),
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": COMPLETION_MASK,
        "advantages": torch.tensor(advantages),
        "num_items_in_batch": COMPLETION_MASK.sum(),
    }
    trl_loss_value = trainer._compute_loss(model, inputs)
    trl_loss_value.backward()
    trl_grads = gradients(model)

    assert ours.importance_weight_mean.item() == 1.0  # on policy: w is exactly 1
    assert ours.loss.item() == pytest.approx(trl_loss_value.item(), rel=1e-4, abs=1e-6)
    for name, grad in trl_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize(
    ("trl_loss", "our_loss"),
    [("dapo", "token-mean"), ("grpo", "sequence-mean"), ("dr_grpo", "dr-grpo")],
)
@pytest.mark.parametrize("old_shift", [None, 0.3, 0.1], ids=["on-policy", "shift-0.3", "shift-0.1"])
def test_sequence_level_ratio_matches_trl_gspo(
    trainer: Any, trl_loss: str, our_loss: LossType, old_shift: float | None
) -> None:
    """GSPO: TRL's `importance_sampling_level="sequence"` against ours; old logprobs shifted by
    one constant per sequence (±shift alternately) so that some sequence ratios are clipped."""
    model = trainer.model
    prompt_ids, completion_ids = batch(model.config.vocab_size)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        current = our_logprobs(model, prompt_ids, completion_ids)
    signs = torch.tensor([[1.0], [-1.0], [-1.0], [1.0]]).expand(BATCH, COMPLETION_LENGTH)
    old = None if old_shift is None else current + old_shift * signs

    trainer.loss_type, trainer.beta = trl_loss, 0.0
    trainer.importance_sampling_level = "sequence"
    inputs: dict[str, Tensor] = {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": COMPLETION_MASK,
        "advantages": ADVANTAGES,
        "num_items_in_batch": COMPLETION_MASK.sum(),
    }
    if old is not None:
        inputs["old_per_token_logps"] = old
    try:
        trl_loss_value = trainer._compute_loss(model, inputs)
    finally:
        trainer.importance_sampling_level = "token"
    trl_loss_value.backward()
    trl_grads = gradients(model)

    config = GRPOLossConfig(
        loss_type=our_loss, max_completion_length=COMPLETION_LENGTH, importance_level="sequence"
    )
    logprobs = our_logprobs(model, prompt_ids, completion_ids)
    proximal = logprobs.detach() if old is None else old
    out = grpo_policy_loss(logprobs, proximal, proximal, ADVANTAGES, COMPLETION_MASK, config)
    out.loss.backward()
    our_grads = gradients(model)

    if old_shift == 0.3:
        assert out.clip_fraction.item() > 0.0
    assert out.loss.item() == pytest.approx(trl_loss_value.item(), rel=1e-5, abs=1e-7)
    for name, grad in trl_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("trl_loss", "our_loss"),
    [("dapo", "token-mean"), ("grpo", "sequence-mean"), ("dr_grpo", "dr-grpo")],
)
def test_engine_mismatch_correction_matches_trl_token_truncate(
    trainer: Any, trl_loss: str, our_loss: LossType
) -> None:
    """TRL's vLLM importance-sampling correction (`token_truncate`, clip_max 2) against our
    truncated weight min(π_prox/π_behav, cap 2) with the engine's logprobs as behaviour: sampler
    logprobs shifted by ±0.4 alternately, so some ratios e^0.4 = 1.49 stay and e^0.8 are cut."""
    model = trainer.model
    prompt_ids, completion_ids = batch(model.config.vocab_size)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        current = our_logprobs(model, prompt_ids, completion_ids)
    shifts = torch.tensor([0.4, -0.4, 0.8, -0.8]).unsqueeze(1).expand(BATCH, COMPLETION_LENGTH)
    sampler = current - shifts
    ratio = torch.exp(current - sampler).clamp(max=2.0)

    trainer.loss_type, trainer.beta = trl_loss, 0.0
    inputs: dict[str, Tensor] = {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": COMPLETION_MASK,
        "advantages": ADVANTAGES,
        "num_items_in_batch": COMPLETION_MASK.sum(),
        "importance_sampling_ratio": ratio,
    }
    saved = (trainer.use_vllm, trainer.vllm_importance_sampling_correction)
    trainer.use_vllm, trainer.vllm_importance_sampling_correction = True, True
    try:
        trl_loss_value = trainer._compute_loss(model, inputs)
    finally:
        trainer.use_vllm, trainer.vllm_importance_sampling_correction = saved
    trl_loss_value.backward()
    trl_grads = gradients(model)

    config = GRPOLossConfig(
        loss_type=our_loss, max_completion_length=COMPLETION_LENGTH, importance_weight_cap=2.0
    )
    logprobs = our_logprobs(model, prompt_ids, completion_ids)
    out = grpo_policy_loss(
        logprobs, logprobs.detach(), sampler, ADVANTAGES, COMPLETION_MASK, config
    )
    out.loss.backward()
    our_grads = gradients(model)

    assert out.truncated_fraction.item() > 0.0
    assert out.loss.item() == pytest.approx(trl_loss_value.item(), rel=1e-5, abs=1e-7)
    for name, grad in trl_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
