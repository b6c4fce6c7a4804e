"""The GRPO learner on hand-built groups of the tiny model: filters, micro-batching, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skillfactory.engines.base import Completion
from skillfactory.group import Group
from skillfactory.runspec import GRPOSpec
from skillfactory.tasks.base import Problem
from skillfactory.train.advantages import group_advantages
from skillfactory.train.grpo_loss import GRPOLossConfig, grpo_policy_loss
from skillfactory.train.learner import GRPOLearner, latest_checkpoint
from skillfactory.train.rollout_batch import collate_groups, completion_logprobs

PROBLEM = Problem(id="q", task="countdown-3", question="?", answer="1", data={"numbers": [1, 2]})


def make_group(
    index: int, rewards: list[float], version: int = 0, length: int = 4, logprob: float = -6.0
) -> Group:
    """A group of len(rewards) completions with token ids derived from the index."""
    completions = [
        Completion(
            text="",
            token_ids=[(7 * index + 3 * j + k) % 400 + 20 for k in range(length - j % 2)],
            logprobs=[logprob] * (length - j % 2),
            finish_reason="stop",
            policy_version=version,
            prompt_token_ids=[5, 6, 7 + index],
        )
        for j in range(len(rewards))
    ]
    return Group(
        group_id=f"p{index}",
        problem=PROBLEM,
        prompt_token_ids=[5, 6, 7 + index],
        completions=completions,
        rewards=rewards,
        prompt_index=index,
    )


def load_model(path: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)


def learner_on(path: Path, **spec: object) -> GRPOLearner:
    """A learner whose rollout batches are one optimizer update unless the test says otherwise."""
    values = {"learning_rate": 1e-2, "prompts_per_step": 256, "mini_batch_size": 256, **spec}
    return GRPOLearner(load_model(path), GRPOSpec(**values), pad_token_id=0)  # type: ignore[arg-type]


def test_stale_groups_are_dropped_and_counted(tiny_model_dir: Path) -> None:
    learner = learner_on(tiny_model_dir, max_staleness=1)
    learner.counters.version = 3
    assert learner.accepts(make_group(0, [1.0, 0.0], version=2))
    assert learner.accepts(make_group(1, [1.0, 0.0], version=3))
    assert not learner.accepts(make_group(2, [1.0, 0.0], version=1))
    assert learner.counters.dropped_stale == 1
    assert learner.is_done(2) and not learner.is_done(0)


def test_zero_variance_groups_are_dropped_only_when_asked(tiny_model_dir: Path) -> None:
    constant = make_group(0, [1.0, 1.0, 1.0])
    assert learner_on(tiny_model_dir).accepts(constant)
    filtering = learner_on(tiny_model_dir, filter_zero_variance=True)
    assert not filtering.accepts(constant)
    assert filtering.accepts(make_group(1, [1.0, 0.0, 1.0]))
    assert filtering.counters.dropped_zero_variance == 1


def test_dr_grpo_advantages_are_centred_not_scaled(tiny_model_dir: Path) -> None:
    group = make_group(0, [1.0, 0.0, 0.0, 0.0])
    (centred,) = learner_on(tiny_model_dir, loss="dr-grpo").advantages([group])
    assert centred == pytest.approx([0.75, -0.25, -0.25, -0.25])
    (scaled,) = learner_on(tiny_model_dir).advantages([group])
    assert scaled == pytest.approx([0.75 / (0.5 + 1e-4), *[-0.25 / (0.5 + 1e-4)] * 3])


def test_learner_logprobs_are_right_aligned_to_the_completion(tiny_model_dir: Path) -> None:
    """Logprobs from the padded batch equal those of each sequence run alone, unpadded."""
    model = load_model(tiny_model_dir)
    groups = [make_group(0, [1.0, 0.0]), make_group(5, [0.0, 1.0], length=6)]
    batch = collate_groups(groups, [[1.0, -1.0], [-1.0, 1.0]], 0, pad_token_id=0)
    padded = completion_logprobs(model, batch)
    row = 0
    for group in groups:
        for completion in group.completions:
            ids = torch.tensor([group.prompt_token_ids + completion.token_ids])
            logits = model(input_ids=ids).logits[0, len(group.prompt_token_ids) - 1 : -1]
            alone = logits.log_softmax(-1).gather(-1, ids[0, -len(completion.token_ids) :, None])
            n = len(completion.token_ids)
            torch.testing.assert_close(padded[row, :n], alone[:, 0], rtol=1e-4, atol=1e-4)
            assert batch.completion_mask[row].sum() == n
            row += 1


def test_micro_batches_by_token_budget_give_the_gradient_of_one_big_batch(
    tiny_model_dir: Path,
) -> None:
    """A budget of a few tokens splits groups into parts (one completion each at worst); the
    accumulated gradient equals one forward over every completion at once."""
    groups = [make_group(i, [1.0, 0.0, 0.0, 1.0][i % 2 :] + [0.5] * (i % 2)) for i in range(4)]
    small = learner_on(tiny_model_dir, mini_batch_size=4, max_tokens_per_micro_batch=9)
    big = learner_on(tiny_model_dir, mini_batch_size=4, max_tokens_per_micro_batch=100_000)
    (tiny_update,) = small.updates(groups)
    (one_update,) = big.updates(groups)
    assert len(one_update.micro_batches) == 1 and len(tiny_update.micro_batches) >= 8
    small.accumulate(tiny_update)
    big.accumulate(one_update)
    for a, b in zip(small.model.parameters(), big.model.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    first, second = small.optimizer_step(), big.optimizer_step()
    assert first[0] == pytest.approx(second[0], rel=1e-5)  # the gradient norms
    for a, b in zip(small.model.parameters(), big.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_a_rollout_batch_of_256_prompts_with_mini_batch_32_makes_8_updates_like_a_hand_loop(
    tiny_model_dir: Path,
) -> None:
    """verl's semantics: 256 / 32 = 8 optimizer updates, each normalised over its own 32 groups,
    all with the proximal policy of the weights at the start of the rollout batch; one version."""
    groups = [make_group(i, [1.0, 0.0] if i % 3 else [0.0, 1.0], length=3) for i in range(256)]
    learner = learner_on(tiny_model_dir, mini_batch_size=32, learning_rate=1e-3)
    steps = 0
    step = learner.optimizer.step

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal steps
        steps += 1
        return step(*args, **kwargs)

    learner.optimizer.step = counted  # type: ignore[method-assign]
    record = learner.train_step(groups)
    assert steps == 8 and record.updates == 8 and record.version == 1 and learner.version == 1

    model = load_model(tiny_model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    config = GRPOLossConfig.from_spec(learner.spec)
    batches = []
    for start in range(0, 256, 32):
        chunk = groups[start : start + 32]
        advantages = [group_advantages(torch.tensor([g.rewards]))[0].tolist() for g in chunk]
        batch = collate_groups(chunk, advantages, 0, pad_token_id=0)
        with torch.no_grad():
            proximal = completion_logprobs(model, batch)
        batches.append((batch, proximal))
    for batch, proximal in batches:
        logprobs = completion_logprobs(model, batch)
        loss = grpo_policy_loss(
            logprobs, proximal, proximal, batch.advantages, batch.completion_mask, config
        ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), learner.spec.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
    for a, b in zip(learner.model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_one_update_per_batch_needs_no_proximal_pass_and_several_keep_the_starting_policy(
    tiny_model_dir: Path,
) -> None:
    groups = [make_group(i, [1.0, 0.0]) for i in range(4)]
    single = learner_on(tiny_model_dir, mini_batch_size=4)
    (update,) = single.updates(groups)
    single.accumulate(update)
    assert update.micro_batches[0].proximal_logprobs is None
    several = learner_on(tiny_model_dir, mini_batch_size=2, epochs_per_batch=2)
    updates = several.updates(groups)
    several.keep_proximal_logprobs(updates)
    starting = load_model(tiny_model_dir)
    kept = [batch.proximal_logprobs for u in updates for batch in u.micro_batches]
    with torch.no_grad():
        batches = [b for u in updates for b in u.micro_batches]
        expected = [completion_logprobs(starting, b) * b.completion_mask for b in batches]
    for got, want in zip(kept, expected, strict=True):
        assert got is not None  # chunked logprobs: 0 on padding, which carries no weight
        torch.testing.assert_close(got, want)
    several.accumulate(updates[0])
    several.optimizer_step()  # the weights move; the second update keeps the starting policy
    output = several._loss(updates[1].micro_batches[0], 1, 1)
    assert output.ratio_mean != pytest.approx(1.0, abs=1e-7)
    record = learner_on(tiny_model_dir, mini_batch_size=2, epochs_per_batch=2).train_step(groups)
    assert record.updates == 4 and record.version == 1


def test_on_policy_tokens_ignore_engine_logprobs_and_stale_ones_are_reweighted(
    tiny_model_dir: Path,
) -> None:
    """Staleness 0: w is exactly 1 whatever the engine reported. Staleness 1 with behaviour
    logprobs far below the learner's: w = exp(prox − behav) is truncated at the cap."""
    fresh = learner_on(tiny_model_dir, max_staleness=2, importance_weight_cap=2.0)
    metrics = fresh.train_step([make_group(0, [1.0, 0.0], logprob=-50.0)])
    assert metrics.importance_weight_mean == pytest.approx(1.0)
    assert metrics.truncated_fraction == 0.0
    assert metrics.staleness == {0: 2}

    stale = learner_on(tiny_model_dir, max_staleness=2, importance_weight_cap=2.0)
    stale.counters.version = 1
    metrics = stale.train_step([make_group(0, [1.0, 0.0], version=0, logprob=-50.0)])
    assert metrics.importance_weight_mean == pytest.approx(2.0)
    assert metrics.truncated_fraction == 1.0
    assert metrics.staleness == {1: 2}
    assert metrics.version == 2


def test_checkpoint_round_trip_restores_weights_optimizer_and_counters(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    learner = learner_on(tiny_model_dir)
    learner.train_step([make_group(0, [1.0, 0.0]), make_group(1, [0.0, 1.0])])
    learner.counters.dropped_stale = 3
    folder = learner.save_checkpoint(tmp_path)
    assert latest_checkpoint(tmp_path) == folder
    twin = learner_on(tiny_model_dir)
    twin.load_checkpoint(folder)
    assert twin.version == 1 and twin.counters.dropped_stale == 3
    assert twin.is_done(0) and twin.is_done(1) and not twin.is_done(2)
    for a, b in zip(learner.model.parameters(), twin.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    # the same next step from both: optimizer moments and schedule came back too
    step = [make_group(2, [1.0, 0.0]), make_group(3, [1.0, 0.0])]
    learner.train_step(step)
    twin.train_step(step)
    for a, b in zip(learner.model.parameters(), twin.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_only_the_newest_checkpoints_are_kept(tiny_model_dir: Path, tmp_path: Path) -> None:
    learner = learner_on(tiny_model_dir)
    for index in range(3):
        learner.train_step([make_group(index, [1.0, 0.0])])
        learner.save_checkpoint(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000002", "step-000003"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000003"


def test_shared_prefix_forward_equals_full_sequences_in_value_and_gradient(
    tiny_model_dir: Path,
) -> None:
    """The prompt run once per group (KV cache repeated) gives the logprobs and the parameter
    gradients of running every full sequence, with ragged prompts and completions."""
    from skillfactory.train.rollout_batch import full_sequence_logprobs, shared_prefix_logprobs

    groups = [make_group(0, [1.0, 0.0, 1.0]), make_group(3, [0.0, 1.0, 1.0], length=7)]
    groups[1].prompt_token_ids = [9, 5, 6, 7, 8]  # a longer prompt: left padding in the batch
    for completion in groups[1].completions:
        completion.prompt_token_ids = groups[1].prompt_token_ids
    batch = collate_groups(groups, [[1.0, -1.0, 0.5]] * 2, 0, pad_token_id=0)
    assert batch.group_size == 3 and batch.prompt_ids.shape == (2, 5)
    model = load_model(tiny_model_dir)
    weights = torch.randn(batch.completion_ids.shape)

    def value_and_grads(fn: object) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        logprobs = fn(model, batch)  # type: ignore[operator]
        (logprobs * weights * batch.completion_mask).sum().backward()
        return logprobs.detach(), [p.grad.clone() for p in model.parameters()]

    full, full_grads = value_and_grads(full_sequence_logprobs)
    shared, shared_grads = value_and_grads(shared_prefix_logprobs)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(shared[mask], full[mask], rtol=1e-4, atol=1e-5)
    for a, b in zip(shared_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_gradient_checkpointing_and_bf16_mixed_train_the_same_step(tiny_model_dir: Path) -> None:
    """Checkpointed activations (the prompt then runs per completion) give the plain step's
    update; bf16-mixed on CPU (autocast) stays close to fp32 and keeps fp32 weights."""
    groups = [make_group(i, [1.0, 0.0, 0.5]) for i in range(2)]
    plain = learner_on(tiny_model_dir, learning_rate=1e-3)
    checkpointed = learner_on(tiny_model_dir, learning_rate=1e-3, gradient_checkpointing=True)
    mixed = learner_on(tiny_model_dir, learning_rate=1e-3, precision="bf16-mixed")
    assert plain.precision == "fp32" and mixed.autocast
    records = [learner.train_step(groups) for learner in (plain, checkpointed, mixed)]
    assert records[1].loss == pytest.approx(records[0].loss, abs=1e-6)
    for a, b, c in zip(
        plain.model.parameters(),
        checkpointed.model.parameters(),
        mixed.model.parameters(),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        assert c.dtype == torch.float32
    assert records[2].loss == pytest.approx(records[0].loss, abs=0.05)
