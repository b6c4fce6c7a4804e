"""The released SkillFactory code's SFT-data formats (its `skill_factory/sft_data_creation.py`).

Each format is a named variant, and `released-default` is the released default set:

| variant | released | traces per problem and repeat | the samples of a trace, in order |
|---|---|---|---|
| `released-0c` | `0C` | 1 | one correct sample |
| `released-c` | `*C` | 1 | N − 1 of any correctness, then a correct one |
| `released-c-full` | `*C_full` | L, one per N = 1…L | as `*C` |
| `released-c-ic` | `*C*IC` | 1 | a correct one and N − 2 of any correctness in random order, then an incorrect one |
| `released-cc` | `*CC` | 1 | N − 2 of any correctness, then two correct ones |
| `released-random` | `random` | L, one per N = 1…L | N of any correctness, the last one too |
| `released-no-reflection` | `no_reflection` | L, one per N = 1…L | as `*C`, shown without reflections |
| `released-default` | `0C *C *C*IC *CC` | 4 | one of each of the four, in this order |

A `*C*IC` trace ends on its incorrect sample; after `</think>` come a backtrack phrase, the latest
correct sample of the trace restated as it was written, the ending phrase and that sample's answer.
A `*CC` trace puts a confirmation phrase after `</think>`, before the ending phrase. (The released
code places both there, in its ending slot.)

**Names.** `released-`, then the released name without its leading `*`, any other `*` or `_` as
`-`, in lower case (`variant_name`): a shell would expand `*C` and YAML would read it as an alias.

**Parameters (`BuildParams`), as released.** N is `max_samples_per_trace` (the released number of
responses; its `*C_full` example uses 5); every format is built `repeats_per_question` times per
problem (released default 3); `distinct_prompt_variants` and `vary_response_count` follow the
released flags of the same meaning (both off by default, as released).

**Which samples and problems take part, as released.** A sample takes part when the verdict
filter keeps at least one of its reflections; in a trace it shows one of those, drawn at random. A
problem takes part when it has a correct such sample, at least N such samples and, with distinct
prompt variants, such samples from at least N solve prompts; otherwise it yields no trace. `*C*IC`
also needs an incorrect sample and `*CC` two correct ones, and both need N ≥ 2; a problem without
them gets no trace of that format. Unlike Algorithm 1, samples are drawn afresh for every trace:
a sample may appear in several traces of a problem, but never twice in one trace.

**Glue, as released.** After a correct sample the next one opens with an after-correct or a
generic phrase, after an incorrect one with an after-incorrect or a generic phrase; `no_reflection`
shows no verdict and uses generic phrases only (`skillfactory.compose.phrases`).

A record's `meta.variant` names the format variant that built its trace, also under
`released-default`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from skillfactory.compose.composition import Builder, BuildParams, Composition, Variant
from skillfactory.compose.pair import Pair, Sample, verdict_filter
from skillfactory.compose.trace import GlueStyle, Trace, TraceStyle

DEFAULT_SET_VARIANT = "released-default"
"""The variant that builds the released default set of formats."""

RELEASED_DEFAULT_SET: tuple[str, ...] = ("0C", "*C", "*C*IC", "*CC")
"""The released code's default formats."""


def variant_name(released_name: str) -> str:
    """Our variant name of a released format name, e.g. `*C*IC` → `released-c-ic`."""
    plain = released_name.removeprefix("*").replace("*", "-").replace("_", "-")
    return f"released-{plain.lower()}"


class SamplePool:
    """A problem's samples that the released formats may draw, each with its kept pairs."""

    def __init__(self, pairs: Sequence[Pair]) -> None:
        grouped: dict[int, list[Pair]] = {}
        for pair in pairs:
            grouped.setdefault(pair.sample.index, []).append(pair)
        self.pairs_of: dict[int, tuple[Pair, ...]] = {i: tuple(g) for i, g in grouped.items()}
        self.samples: tuple[Sample, ...] = tuple(group[0].sample for group in grouped.values())
        self.correct = tuple(sample for sample in self.samples if sample.correct)
        self.incorrect = tuple(sample for sample in self.samples if not sample.correct)
        self.prompt_variants = tuple(sorted({sample.prompt_variant for sample in self.samples}))

    def takes_part(self, params: BuildParams) -> bool:
        """Whether the problem yields traces at all (see the module docstring)."""
        needed = params.max_samples_per_trace
        if not self.correct or len(self.samples) < needed:
            return False
        return not params.distinct_prompt_variants or len(self.prompt_variants) >= needed

    def excluding(self, *chosen: Sample) -> list[Sample]:
        """The samples other than `chosen`, in sample order."""
        taken = {sample.index for sample in chosen}
        return [sample for sample in self.samples if sample.index not in taken]

    def of_prompt_variant(self, prompt_variant: str) -> list[Sample]:
        """The samples of one solve prompt, in sample order."""
        return [sample for sample in self.samples if sample.prompt_variant == prompt_variant]

    def pair_of(self, sample: Sample, rng: random.Random) -> Pair:
        """The sample with one of its kept reflections, drawn at random."""
        return rng.choice(self.pairs_of[sample.index])


def response_count(params: BuildParams, rng: random.Random) -> int:
    """N of a `*C`, `*C*IC` or `*CC` trace: L, or uniform over [2, L] when counts vary."""
    most = params.max_samples_per_trace
    return rng.randint(2, most) if params.vary_response_count and most >= 2 else most


def draw_ending_on(
    last: Sample, pool: SamplePool, n: int, rng: random.Random, distinct: bool
) -> list[Sample]:
    """`n` different samples ending on `last`; the others are of any correctness and, when
    `distinct`, each from its own solve prompt, none from `last`'s."""
    if not distinct:
        return [*rng.sample(pool.excluding(last), n - 1), last]
    others = [v for v in pool.prompt_variants if v != last.prompt_variant]
    return [*(rng.choice(pool.of_prompt_variant(v)) for v in rng.sample(others, n - 1)), last]


def draw_backtrack(pool: SamplePool, n: int, rng: random.Random) -> list[Sample]:
    """A correct sample and n − 2 others in random order, then an incorrect sample."""
    correct, incorrect = rng.choice(pool.correct), rng.choice(pool.incorrect)
    head = [correct, *rng.sample(pool.excluding(correct, incorrect), n - 2)]
    rng.shuffle(head)
    return [*head, incorrect]


def draw_confirm(pool: SamplePool, n: int, rng: random.Random) -> list[Sample]:
    """n − 2 samples of any correctness, then two different correct samples."""
    last_two = rng.sample(pool.correct, 2)
    return [*rng.sample(pool.excluding(*last_two), n - 2), *last_two]


def shown_pairs(
    samples: Sequence[Sample], pool: SamplePool, rng: random.Random
) -> tuple[Pair, ...]:
    """Each sample with the kept reflection it shows."""
    return tuple(pool.pair_of(sample, rng) for sample in samples)


FormatBuilder = Callable[[SamplePool, random.Random, BuildParams], list[Trace]]
"""The traces one released format adds to a problem in one repeat."""


@dataclass(frozen=True)
class ReleasedFormat:
    """A released format: its released name, what it builds and how."""

    released_name: str
    description: str
    build_once: FormatBuilder

    @property
    def variant(self) -> str:
        """Our name of the format (see `variant_name`)."""
        return variant_name(self.released_name)


def _ending_correct(
    pool: SamplePool,
    rng: random.Random,
    params: BuildParams,
    n: int,
    released_name: str,
    style: TraceStyle = "reflect",
    glue: GlueStyle = "matched-or-generic",
) -> Trace:
    last = rng.choice(pool.correct)
    samples = draw_ending_on(last, pool, n, rng, params.distinct_prompt_variants)
    return Trace(shown_pairs(samples, pool, rng), style, glue, variant=variant_name(released_name))


def build_0c(pool: SamplePool, rng: random.Random, params: BuildParams) -> list[Trace]:
    """`0C`: one correct sample."""
    return [_ending_correct(pool, rng, params, 1, "0C")]


def build_c(pool: SamplePool, rng: random.Random, params: BuildParams) -> list[Trace]:
    """`*C`: N − 1 samples of any correctness, then a correct one."""
    return [_ending_correct(pool, rng, params, response_count(params, rng), "*C")]


def build_c_full(pool: SamplePool, rng: random.Random, params: BuildParams) -> list[Trace]:
    """`*C_full`: one `*C` trace for each N = 1…L."""
    lengths = range(1, params.max_samples_per_trace + 1)
    return [_ending_correct(pool, rng, params, n, "*C_full") for n in lengths]


def build_no_reflection(pool: SamplePool, rng: random.Random, params: BuildParams) -> list[Trace]:
    """`no_reflection`: `*C_full` without reflections, glued with generic phrases."""
    lengths = range(1, params.max_samples_per_trace + 1)
    return [
        _ending_correct(pool, rng, params, n, "no_reflection", "samples", "generic")
        for n in lengths
    ]


def build_random(pool: SamplePool, rng: random.Random, params: BuildParams) -> list[Trace]:
    """`random`: for each N = 1…L, N samples with correctness ignored, the last one too."""
    traces = []
    for n in range(1, params.max_samples_per_trace + 1):
        last = rng.choice(pool.samples)
        samples = draw_ending_on(last, pool, n, rng, params.distinct_prompt_variants)
        pairs = shown_pairs(samples, pool, rng)
        traces.append(Trace(pairs, glue="matched-or-generic", variant=variant_name("random")))
    return traces


def build_c_ic(pool: SamplePool, rng: random.Random, params: BuildParams) -> list[Trace]:
    """`*C*IC`: ends on an incorrect sample, then backtracks to the latest correct one."""
    n = response_count(params, rng)
    if n < 2 or not pool.incorrect:
        return []
    pairs = shown_pairs(draw_backtrack(pool, n, rng), pool, rng)
    restated = next(pair for pair in reversed(pairs) if pair.correct)
    trace = Trace(
        pairs,
        glue="matched-or-generic",
        ending="backtrack",
        restated=restated,
        variant=variant_name("*C*IC"),
    )
    return [trace]


def build_cc(pool: SamplePool, rng: random.Random, params: BuildParams) -> list[Trace]:
    """`*CC`: ends on two correct samples, then a confirmation phrase."""
    n = response_count(params, rng)
    if n < 2 or len(pool.correct) < 2:
        return []
    pairs = shown_pairs(draw_confirm(pool, n, rng), pool, rng)
    trace = Trace(pairs, glue="matched-or-generic", ending="confirm", variant=variant_name("*CC"))
    return [trace]


RELEASED_FORMATS: tuple[ReleasedFormat, ...] = (
    ReleasedFormat("random", "correctness ignored, one trace per N = 1..L", build_random),
    ReleasedFormat("no_reflection", "*C_full without reflections", build_no_reflection),
    ReleasedFormat("0C", "one correct sample", build_0c),
    ReleasedFormat("*C", "N-1 samples of any correctness, then a correct one", build_c),
    ReleasedFormat("*C_full", "*C for every N = 1..L", build_c_full),
    ReleasedFormat("*C*IC", "ends incorrect, backtracks to an earlier correct one", build_c_ic),
    ReleasedFormat("*CC", "two correct samples last, then a confirmation", build_cc),
)
"""Every released format, in the order the released code builds them within a repeat."""


def build_formats(formats: Sequence[ReleasedFormat]) -> Builder:
    """A builder of the given formats: verdict filter, then every format once per repeat."""

    def build(samples: Sequence[Sample], rng: random.Random, params: BuildParams) -> Composition:
        kept = verdict_filter(samples)
        pool = SamplePool(kept.pairs)
        traces: list[Trace] = []
        if pool.takes_part(params):
            for _ in range(params.repeats_per_question):
                for released_format in formats:
                    traces.extend(released_format.build_once(pool, rng, params))
        return Composition(traces, kept.counts)

    return build


def released_variants() -> list[Variant]:
    """One variant per released format, then the released default set."""
    variants = [
        Variant(f.variant, f"released {f.released_name}: {f.description}", build_formats((f,)))
        for f in RELEASED_FORMATS
    ]
    default_set = [f for f in RELEASED_FORMATS if f.released_name in RELEASED_DEFAULT_SET]
    description = f"released default set: {' '.join(RELEASED_DEFAULT_SET)}"
    return [*variants, Variant(DEFAULT_SET_VARIANT, description, build_formats(default_set))]
