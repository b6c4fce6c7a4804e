"""The trace composer: graded samples of each problem in, SFT chat records out.

Every random choice of a problem comes from generators seeded by (run seed, problem id), so the
output depends only on the seed and the input, not on the order or batching of problems.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from skillfactory.compose.composition import (
    DEFAULT_REPEATS_PER_QUESTION,
    BuildParams,
    Composition,
    Variant,
)
from skillfactory.compose.record import ProblemSamples, sft_record
from skillfactory.compose.summary import ComposeSummary
from skillfactory.compose.trace import DEFAULT_MAX_SAMPLES_PER_TRACE, format_trace, problem_rng
from skillfactory.compose.variants import DEFAULT_VARIANT, get_variant


@dataclass(frozen=True)
class ComposeOptions:
    """How to compose: the variant, the seed, L_max and the released formats' parameters (see
    `BuildParams`, which also checks their bounds)."""

    variant: str = DEFAULT_VARIANT
    seed: int = 0
    max_samples_per_trace: int = DEFAULT_MAX_SAMPLES_PER_TRACE
    repeats_per_question: int = DEFAULT_REPEATS_PER_QUESTION
    distinct_prompt_variants: bool = False
    vary_response_count: bool = False

    def __post_init__(self) -> None:
        get_variant(self.variant)
        self.build_params()

    def build_params(self) -> BuildParams:
        """The parameters every builder receives."""
        return BuildParams(
            self.max_samples_per_trace,
            self.repeats_per_question,
            self.distinct_prompt_variants,
            self.vary_response_count,
        )

    def new_summary(self) -> ComposeSummary:
        """An empty summary for a run with these options."""
        return ComposeSummary(self.variant, self.seed, self.max_samples_per_trace)


def compose_traces(item: ProblemSamples, options: ComposeOptions) -> Composition:
    """The traces (not yet written as text) of one problem under the chosen variant."""
    variant: Variant = get_variant(options.variant)
    rng = problem_rng(options.seed, item.problem.id)
    return variant.build(item.samples, rng, options.build_params())


def compose_problem(
    item: ProblemSamples, options: ComposeOptions, summary: ComposeSummary | None = None
) -> list[dict[str, Any]]:
    """The SFT records of one problem; accounts for it in `summary` when given.

    A record's `meta.variant` is the variant that built its trace: the chosen one, or the member
    of a set of variants (`released-default`) that built it.
    """
    composition = compose_traces(item, options)
    phrase_rng = problem_rng(options.seed, item.problem.id, "phrases")
    records = [
        sft_record(
            item.problem,
            trace,
            format_trace(trace, phrase_rng),
            number,
            trace.variant or options.variant,
        )
        for number, trace in enumerate(composition.traces)
    ]
    if summary is not None:
        n_correct = sum(sample.correct for sample in item.samples)
        summary.add_problem(len(item.samples), n_correct, composition.counts, composition.traces)
    return records


def compose(
    items: Iterable[ProblemSamples], options: ComposeOptions, summary: ComposeSummary
) -> Iterator[dict[str, Any]]:
    """SFT records of many problems, in input order, accounting for each in `summary`."""
    for item in items:
        yield from compose_problem(item, options, summary)
