"""Overlong completions (issue 17 item 5): DAPO's soft overlong penalty against hand-computed
values, `mask_truncated_completions` removing truncated completions from the loss, and the finish
reason travelling from the Group wire message through collation to the step record."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from prometheus_client import CollectorRegistry
from test_learner import learner_on, make_group

from skillfactory.group import Group
from skillfactory.runspec import GRPOSpec
from skillfactory.serving.learner_metrics import LearnerMetrics
from skillfactory.train.advantages import rollout_advantages
from skillfactory.train.overlong import (
    group_overlong_penalties,
    overlong_penalty,
    truncated_share,
)
from skillfactory.train.rollout_batch import collate_groups
from skillfactory.train.step_record import StepRecord
from skillfactory.v1 import data_pb2
from skillfactory.wire.messages import group_from_proto, group_to_proto


def truncating(group: Group, *rows: int) -> Group:
    """`group` with the completions at `rows` finished by length."""
    completions = [
        replace(c, finish_reason="length") if j in rows else c
        for j, c in enumerate(group.completions)
    ]
    return replace(group, completions=completions)


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (5, 0.0),  # well below L − B = 12
        (12, 0.0),  # exactly L − B: no penalty yet
        (13, -0.0625),  # (12 − 13) / 8 · 0.5
        (16, -0.25),  # (12 − 16) / 8 · 0.5
        (20, -0.5),  # |y| = L: the whole factor
        (21, -0.5),  # beyond L: −factor
        (400, -0.5),
    ],
)
def test_soft_overlong_penalty_below_inside_and_beyond_the_buffer(
    length: int, expected: float
) -> None:
    assert overlong_penalty(length, max_length=20, buffer=8, factor=0.5) == pytest.approx(expected)


def test_no_buffer_no_penalty_and_a_buffer_of_the_whole_length() -> None:
    assert overlong_penalty(4096, max_length=20, buffer=0, factor=1.0) == 0.0
    assert overlong_penalty(0, max_length=10, buffer=10, factor=1.0) == 0.0
    assert overlong_penalty(5, max_length=10, buffer=10, factor=2.0) == pytest.approx(-1.0)


def test_the_buffer_may_not_exceed_the_response_length() -> None:
    with pytest.raises(ValueError, match="overlong_buffer_length"):
        GRPOSpec(max_response_length=8, overlong_buffer_length=9)
    assert GRPOSpec(max_response_length=8, overlong_buffer_length=8).overlong_buffer_length == 8


def test_penalties_per_group_and_the_truncated_share() -> None:
    groups = [truncating(make_group(0, [1.0, 0.0, 1.0, 0.0]), 0), make_group(1, [1.0, 0.0])]
    # lengths 4, 3, 4, 3 and 4, 3; L = 4, B = 2: 4 → −1, 3 → −0.5
    assert group_overlong_penalties(groups, 4, 2, 1.0) == [[-1.0, -0.5, -1.0, -0.5], [-1.0, -0.5]]
    assert truncated_share(groups) == pytest.approx(1 / 6)
    assert truncated_share([]) == 0.0


def test_finish_reason_survives_the_group_message_and_collation() -> None:
    group = truncating(make_group(0, [1.0, 0.0, 1.0, 0.0]), 1, 2)
    wire = data_pb2.Group.FromString(group_to_proto(group, run_id="r").SerializeToString())
    assert [c.finish_reason for c in wire.completions] == [
        data_pb2.FINISH_REASON_STOP,
        data_pb2.FINISH_REASON_LENGTH,
        data_pb2.FINISH_REASON_LENGTH,
        data_pb2.FINISH_REASON_STOP,
    ]
    back = group_from_proto(wire)
    assert [c.finish_reason for c in back.completions] == ["stop", "length", "length", "stop"]
    batch = collate_groups([back, make_group(1, [0.0, 1.0])], [[0.0] * 4, [0.0] * 2], 0, 0)
    assert batch.truncated is not None
    assert batch.truncated.tolist() == [False, True, True, False, False, False]
    assert torch.equal(batch.loss_mask(False), batch.completion_mask)
    masked = batch.loss_mask(True)
    assert masked[1].sum() == 0 and masked[2].sum() == 0
    assert torch.equal(masked[[0, 3, 4, 5]], batch.completion_mask[[0, 3, 4, 5]])


def _gradients(learner: object) -> list[torch.Tensor | None]:
    model = learner.model  # type: ignore[attr-defined]
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("loss", ["token-mean", "sequence-mean", "dr-grpo"])
def test_masked_truncated_completions_give_the_gradient_of_the_batch_without_them(
    tiny_model_dir: Path, loss: str
) -> None:
    """Advantages come from the whole groups (truncated completions stay in the baseline); the
    masked update's gradient equals an unmasked update over the same groups without the
    truncated completions, given the same advantages."""
    groups = [
        truncating(make_group(0, [1.0, 0.0, 0.0, 1.0]), 0),
        truncating(make_group(1, [0.0, 1.0, 1.0, 0.0]), 1, 3),
    ]
    masking = learner_on(tiny_model_dir, loss=loss, mask_truncated_completions=True)
    advantages = masking.advantages(groups)
    whole = rollout_advantages([[1.0, 0.0, 0.0, 1.0]], norm=masking.advantage_norm)
    assert advantages[0] == pytest.approx(whole[0])  # the truncated one is in the baseline
    (update,) = masking.updates(groups, advantages)
    assert (update.num_sequences, update.num_tokens) == (5, 3 + 4 + 3 + 4 + 4)
    masking.accumulate(update)

    kept = [[1, 2, 3], [0, 2]]
    without = [
        replace(
            g,
            completions=[g.completions[j] for j in rows],
            rewards=[g.rewards[j] for j in rows],
        )
        for g, rows in zip(groups, kept, strict=True)
    ]
    kept_advantages = [[a[j] for j in rows] for a, rows in zip(advantages, kept, strict=True)]
    plain = learner_on(tiny_model_dir, loss=loss)
    (plain_update,) = plain.updates(without, kept_advantages)
    plain.accumulate(plain_update)

    unmasked = learner_on(tiny_model_dir, loss=loss)
    (all_rows,) = unmasked.updates(groups, advantages)
    unmasked.accumulate(all_rows)

    differs = False
    for a, b, c in zip(_gradients(masking), _gradients(plain), _gradients(unmasked), strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None and c is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
            differs = differs or not torch.allclose(a, c, rtol=1e-3, atol=1e-6)
    assert differs, "the truncated completions carry gradient when not masked"


def test_train_step_with_both_options_shapes_rewards_and_records_the_step(
    tiny_model_dir: Path,
) -> None:
    """L = 4, B = 2, factor 1: lengths 4, 3, 4, 3 get −1, −0.5, −1, −0.5 added before the
    advantages; one completion per group is truncated (share 2/8, mean penalty −0.75)."""
    groups = [
        truncating(make_group(0, [1.0, 0.0, 1.0, 0.0]), 0),
        truncating(make_group(1, [0.0, 1.0, 1.0, 1.0]), 2),
    ]
    learner = learner_on(
        tiny_model_dir,
        max_response_length=4,
        overlong_buffer_length=2,
        overlong_penalty_factor=1.0,
        mask_truncated_completions=True,
    )
    seen: list[list[list[float]] | None] = []
    original = learner.advantages

    def advantages(groups: object, rewards: list[list[float]] | None = None) -> object:
        seen.append(rewards)
        return original(groups, rewards)  # type: ignore[arg-type]

    learner.advantages = advantages  # type: ignore[method-assign]
    record = learner.train_step(groups)
    assert seen == [[[0.0, -0.5, 0.0, -0.5], [-1.0, 0.5, 0.0, 0.5]]]
    assert record.truncated_completion_fraction == pytest.approx(0.25)
    assert record.overlong_penalty_mean == pytest.approx(-0.75)
    assert record.reward_mean == pytest.approx(5 / 8)  # the task's rewards, unshaped
    assert record.tokens == 28 and record.samples == 8
    again = StepRecord.from_json(record.to_json())
    assert again.truncated_completion_fraction == pytest.approx(0.25)
    assert again.overlong_penalty_mean == pytest.approx(-0.75)

    registry = CollectorRegistry()
    LearnerMetrics(registry).on_step(record)
    assert registry.get_sample_value(
        "skillfactory_learner_truncated_completion_fraction"
    ) == pytest.approx(0.25)
    assert registry.get_sample_value("skillfactory_learner_overlong_penalty_mean") == (
        pytest.approx(-0.75)
    )


def test_options_off_change_nothing(tiny_model_dir: Path) -> None:
    groups = [truncating(make_group(0, [1.0, 0.0]), 0), make_group(1, [0.0, 1.0])]
    learner = learner_on(tiny_model_dir)
    assert learner.overlong_penalties(groups) == [[0.0, 0.0], [0.0, 0.0]]
    (update,) = learner.updates(groups)
    assert (update.num_sequences, update.num_tokens) == (4, 14)
    record = learner.train_step(groups)
    assert record.truncated_completion_fraction == pytest.approx(0.25)
    assert record.overlong_penalty_mean == 0.0
