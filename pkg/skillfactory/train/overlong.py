"""Overlong completions: which ones were truncated, and DAPO's soft overlong punishment.

A completion is *truncated* when the engine stopped it at its token budget
(`Completion.finish_reason == "length"`, carried through the `Group` wire message as
`FINISH_REASON_LENGTH`), rather than at end of sequence or a stop string. Two options act on it:

- `grpo.mask_truncated_completions` (TRL `mask_truncated_completions`; verl: none built in,
  DAPO calls it overlong filtering): a truncated completion gets no loss — its tokens leave the
  loss mask and the loss normalisers (tokens, sequences), so the gradient is that of the same
  batch without it. It still counts in its group's advantage baseline (mean and std), as in TRL,
  where only the loss is masked.
- `grpo.overlong_buffer_length` B > 0 with `grpo.overlong_penalty_factor` f (DAPO's soft
  overlong punishment; verl `reward_model.overlong_buffer.len` / `penalty_factor`): with
  L = `grpo.max_response_length`, a completion of |y| tokens gets the added reward

      0                       if |y| ≤ L − B
      (L − B − |y|) / B · f   if L − B < |y| ≤ L
      −f                      if |y| > L

  The learner adds it to the rewards before the advantages, from the token count, so embedded
  and distributed runs (where the reward service scores completions) shape rewards alike.
  `reward_mean` and the reward terms in the step record stay the task's rewards, and
  `filter_zero_variance` still judges those (DAPO's dynamic sampling filters on accuracy too).
"""

from __future__ import annotations

from collections.abc import Sequence

from skillfactory.engines.base import Completion
from skillfactory.group import Group


def is_truncated(completion: Completion) -> bool:
    """Whether the engine stopped `completion` at its token budget (finish reason `length`)."""
    return completion.finish_reason == "length"


def overlong_penalty(length: int, max_length: int, buffer: int, factor: float) -> float:
    """DAPO's soft overlong punishment of a completion of `length` tokens (≤ 0; 0 when
    `buffer` is 0)."""
    if buffer <= 0:
        return 0.0
    expected = max_length - buffer
    if length <= expected:
        return 0.0
    if length <= max_length:
        return (expected - length) / buffer * factor
    return -factor


def group_overlong_penalties(
    groups: Sequence[Group], max_length: int, buffer: int, factor: float
) -> list[list[float]]:
    """The penalty of every completion, one list per group."""
    return [
        [overlong_penalty(len(c.token_ids), max_length, buffer, factor) for c in group.completions]
        for group in groups
    ]


def truncated_share(groups: Sequence[Group]) -> float:
    """Share of the groups' completions that were truncated (0 without completions)."""
    flags = [is_truncated(c) for g in groups for c in g.completions]
    return sum(flags) / len(flags) if flags else 0.0
