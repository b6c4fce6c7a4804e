"""Stage 1's trace composer: the verdict filter, Algorithm 1, the named ablations and the
released code's formats.

Typical use::

    options = ComposeOptions(variant="skillfactory", seed=0)
    summary = options.new_summary()
    records = list(compose(items, options, summary))
"""

from skillfactory.compose.composer import ComposeOptions, compose, compose_problem, compose_traces
from skillfactory.compose.composition import (
    DEFAULT_REPEATS_PER_QUESTION,
    BuildParams,
    Composition,
    Variant,
)
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
from skillfactory.compose.phrases import (
    BACKTRACK_PHRASES,
    CONFIRM_PHRASES,
    ENDING_PHRASES,
    GENERIC_GLUE,
    GLUE_AFTER_CORRECT,
    GLUE_AFTER_INCORRECT,
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
from skillfactory.compose.released import (
    DEFAULT_SET_VARIANT,
    RELEASED_DEFAULT_SET,
    RELEASED_FORMATS,
    ReleasedFormat,
    variant_name,
)
from skillfactory.compose.summary import ComposeSummary
from skillfactory.compose.trace import (
    DEFAULT_MAX_SAMPLES_PER_TRACE,
    Trace,
    assemble_traces,
    format_trace,
    problem_rng,
)
from skillfactory.compose.variants import (
    DEFAULT_VARIANT,
    VARIANTS,
    UnknownVariantError,
    get_variant,
)

__all__ = [
    "BACKTRACK_PHRASES",
    "CONFIRM_PHRASES",
    "DEFAULT_MAX_SAMPLES_PER_TRACE",
    "DEFAULT_REPEATS_PER_QUESTION",
    "DEFAULT_SET_VARIANT",
    "DEFAULT_VARIANT",
    "ENDING_PHRASES",
    "GENERIC_GLUE",
    "GLUE_AFTER_CORRECT",
    "GLUE_AFTER_INCORRECT",
    "RELEASED_DEFAULT_SET",
    "RELEASED_FORMATS",
    "VARIANTS",
    "BuildParams",
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
    "ReleasedFormat",
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
    "variant_name",
    "verdict_filter",
]
