"""What a named variant is: a builder from a problem's graded samples to its traces, and the
parameters every builder receives."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from skillfactory.compose.pair import FilterCounts, Sample
from skillfactory.compose.trace import DEFAULT_MAX_SAMPLES_PER_TRACE, Trace

DEFAULT_REPEATS_PER_QUESTION = 3
"""How often the released formats are built per problem (the released code's default)."""


@dataclass(frozen=True)
class BuildParams:
    """What a builder reads besides a problem's samples and its seeded generator."""

    max_samples_per_trace: int = DEFAULT_MAX_SAMPLES_PER_TRACE
    """L_max of Algorithm 1; for the released formats, the number of responses N (the released
    `--num_responses_ignore_correctness`)."""
    repeats_per_question: int = DEFAULT_REPEATS_PER_QUESTION
    """Released formats only: how many times each format is built per problem."""
    distinct_prompt_variants: bool = False
    """Released formats only (the released `--force_unique_prompting_types`): the samples before
    the last one of a `0C`, `*C`, `*C_full`, `random` or `no_reflection` trace come from solve
    prompts that differ from each other and from the last sample's. A problem then needs samples
    from at least N solve prompts, so N ≤ 4 with the four solve prompts."""
    vary_response_count: bool = False
    """Released formats only (the released `--sampling_response_counts`): N is uniform over
    [2, L] for each `*C`, `*C*IC` and `*CC` trace instead of L."""

    def __post_init__(self) -> None:
        if self.max_samples_per_trace < 1:
            raise ValueError(
                f"max_samples_per_trace must be at least 1, got {self.max_samples_per_trace}"
            )
        if self.repeats_per_question < 1:
            raise ValueError(
                f"repeats_per_question must be at least 1, got {self.repeats_per_question}"
            )


@dataclass(frozen=True)
class Composition:
    """A problem's traces under one variant, and the verdict-filter counts behind them."""

    traces: list[Trace]
    counts: FilterCounts


Builder = Callable[[Sequence[Sample], random.Random, BuildParams], Composition]
"""Builds a problem's traces from its graded samples, a seeded generator and the parameters."""


@dataclass(frozen=True)
class Variant:
    """A named way to turn graded samples into traces."""

    name: str
    description: str
    build: Builder
