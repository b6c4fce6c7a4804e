"""The method and its ablations/baselines, selectable by name.

| name | what changes |
|---|---|
| `skillfactory` | Algorithm 1 over the verdict-filtered pairs (the method) |
| `no-sample-order` | same draws, but the whole trace is shuffled: the last sample need not be correct |
| `no-reflection` | Algorithm 1 over the samples themselves (no verdict filter), no `<reflect>` blocks |
| `no-prompt-diversity` | the method on the samples of one solve variant (`step_by_step`) only |
| `star` | one trace per correct sample, the sample's own text with no reflection (STaR) |
| `fixed-length` | per problem one trace of each length N = 1…L, ending on a correct pair |

`no-reflection` and `star` show no reflection, so they do not depend on the verdict filter: each
usable sample is one unit. Every variant leaves out samples without an answer.

The released SkillFactory code's formats are variants too: `released-0c`, `released-c`,
`released-c-full`, `released-c-ic`, `released-cc`, `released-random`, `released-no-reflection` and
the released default set `released-default` (see `skillfactory.compose.released`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from skillfactory.compose.composition import BuildParams, Composition, Variant
from skillfactory.compose.pair import FilterCounts, Pair, Sample, bare_pairs, verdict_filter
from skillfactory.compose.released import released_variants
from skillfactory.compose.trace import (
    Trace,
    assemble_traces,
    distinct_samples,
    draw_distinct_samples,
    order_trace,
)
from skillfactory.prompts import DEFAULT_SOLVE_VARIANT


def _samples_only_counts(unusable: int) -> FilterCounts:
    counts = FilterCounts()
    counts.unusable_samples = unusable
    return counts


def build_skillfactory(
    samples: Sequence[Sample], rng: random.Random, params: BuildParams
) -> Composition:
    """The method: verdict filter, then Algorithm 1 with reflections shown."""
    kept = verdict_filter(samples)
    return Composition(assemble_traces(kept.pairs, rng, params.max_samples_per_trace), kept.counts)


def build_no_sample_order(
    samples: Sequence[Sample], rng: random.Random, params: BuildParams
) -> Composition:
    """Algorithm 1's draws with the whole trace shuffled (last not forced correct)."""
    kept = verdict_filter(samples)
    return Composition(
        assemble_traces(kept.pairs, rng, params.max_samples_per_trace, keep_order=False),
        kept.counts,
    )


def build_no_reflection(
    samples: Sequence[Sample], rng: random.Random, params: BuildParams
) -> Composition:
    """Algorithm 1 over usable samples, one unit each, written without reflections."""
    pairs, unusable = bare_pairs(samples)
    traces = assemble_traces(pairs, rng, params.max_samples_per_trace, style="samples")
    return Composition(traces, _samples_only_counts(unusable))


def build_no_prompt_diversity(
    samples: Sequence[Sample], rng: random.Random, params: BuildParams
) -> Composition:
    """The method restricted to samples of the plain solve variant."""
    plain = [sample for sample in samples if sample.prompt_variant == DEFAULT_SOLVE_VARIANT]
    return build_skillfactory(plain, rng, params)


def build_star(samples: Sequence[Sample], rng: random.Random, params: BuildParams) -> Composition:
    """STaR: each usable correct sample alone, as the model wrote it; no reflection, no ordering."""
    pairs, unusable = bare_pairs(samples)
    traces = [Trace((pair,), style="raw") for pair in pairs if pair.correct]
    return Composition(traces, _samples_only_counts(unusable))


def fixed_length_counts(
    length: int, n_correct_left: int, n_incorrect_left: int, rng: random.Random
) -> tuple[int, int] | None:
    """(n+, n−) with n+ + n− = length, n− < n+, within what is left; None when impossible.

    n− is uniform over its feasible range [max(0, length − |Y+|), min((length − 1) // 2, |Y−|)].
    """
    low = max(0, length - n_correct_left)
    high = min((length - 1) // 2, n_incorrect_left)
    if low > high:
        return None
    n_minus = rng.randint(low, high)
    return length - n_minus, n_minus


def fixed_length_traces(pairs: Sequence[Pair], rng: random.Random, max_len: int) -> list[Trace]:
    """One trace per length N = 1…L, each ending on a correct pair; lengths that cannot be filled
    from what is left are skipped. Pairs are drawn without replacement across the lengths."""
    correct = [pair for pair in pairs if pair.correct]
    incorrect = [pair for pair in pairs if not pair.correct]
    traces: list[Trace] = []
    for length in range(1, max_len + 1):
        counts = fixed_length_counts(
            length, distinct_samples(correct), distinct_samples(incorrect), rng
        )
        if counts is None:
            continue
        t_plus = draw_distinct_samples(correct, counts[0], rng)
        t_minus = draw_distinct_samples(incorrect, counts[1], rng)
        traces.append(Trace(order_trace(t_plus, t_minus, rng)))
    return traces


def build_fixed_length(
    samples: Sequence[Sample], rng: random.Random, params: BuildParams
) -> Composition:
    """Verdict filter, then one trace of each length 1…L."""
    kept = verdict_filter(samples)
    return Composition(
        fixed_length_traces(kept.pairs, rng, params.max_samples_per_trace), kept.counts
    )


VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant("skillfactory", "Algorithm 1 over verdict-filtered pairs", build_skillfactory),
        Variant("no-sample-order", "pairs in random order", build_no_sample_order),
        Variant("no-reflection", "samples only, no reflections", build_no_reflection),
        Variant(
            "no-prompt-diversity",
            f"only {DEFAULT_SOLVE_VARIANT} samples",
            build_no_prompt_diversity,
        ),
        Variant("star", "one correct sample per trace (STaR)", build_star),
        Variant("fixed-length", "one trace per length 1..L", build_fixed_length),
        *released_variants(),
    )
}
"""Every variant by name; `skillfactory` is the default."""

DEFAULT_VARIANT = "skillfactory"


class UnknownVariantError(ValueError):
    """A variant name that is not in `VARIANTS`."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown variant {name!r}; allowed: {', '.join(VARIANTS)}")
        self.name = name


def get_variant(name: str) -> Variant:
    """The variant called `name`; raises `UnknownVariantError` listing the allowed names."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise UnknownVariantError(name) from None
