"""Stage 1's trace composer: the verdict filter, Algorithm 1 and the named ablations.

Typical use::

    options = ComposeOptions(variant="skillfactory", seed=0)
    summary = options.new_summary()
    records = list(compose(items, options, summary))
"""

from skillfactory.compose.composer import ComposeOptions, compose, compose_problem, compose_traces
from skillfactory.compose.pair import (
    ClassCounts,
    FilterCounts,
    FilterResult,
    Pair,
    Reflection,
    Sample,
    reflection_from_text,
    verdict_filter,
)
from skillfactory.compose.record import (
    ProblemSamples,
    RecordError,
    SampleGrader,
    dump_record,
    grade_with_task,
    parse_samples_line,
    parse_samples_record,
    sft_record,
)
from skillfactory.compose.summary import ComposeSummary
from skillfactory.compose.trace import (
    DEFAULT_MAX_SAMPLES_PER_TRACE,
    ENDING_PHRASES,
    GLUE_AFTER_CORRECT,
    GLUE_AFTER_INCORRECT,
    Trace,
    assemble_traces,
    format_trace,
    problem_rng,
)
from skillfactory.compose.variants import (
    DEFAULT_VARIANT,
    VARIANTS,
    Composition,
    UnknownVariantError,
    Variant,
    get_variant,
)

__all__ = [
    "DEFAULT_MAX_SAMPLES_PER_TRACE",
    "DEFAULT_VARIANT",
    "ENDING_PHRASES",
    "GLUE_AFTER_CORRECT",
    "GLUE_AFTER_INCORRECT",
    "VARIANTS",
    "ClassCounts",
    "ComposeOptions",
    "ComposeSummary",
    "Composition",
    "FilterCounts",
    "FilterResult",
    "Pair",
    "ProblemSamples",
    "RecordError",
    "Reflection",
    "Sample",
    "SampleGrader",
    "Trace",
    "UnknownVariantError",
    "Variant",
    "assemble_traces",
    "compose",
    "compose_problem",
    "compose_traces",
    "dump_record",
    "format_trace",
    "get_variant",
    "grade_with_task",
    "parse_samples_line",
    "parse_samples_record",
    "problem_rng",
    "reflection_from_text",
    "sft_record",
    "verdict_filter",
]
