"""Algorithm 1 (silver-trace assembly) and the text format of a trace.

Per problem, Y+ holds the correct pairs and Y− the incorrect ones. While Y+ is not empty:

    n+ = min(U[1, L_max], |Y+|)
    n− = min(U[0, n+ − 1], |Y−|)
    draw T+ (n+ pairs) from Y+ and T− (n− pairs) from Y−, without replacement
    trace = shuffle(T− ∪ T+[1 : n+ − 1]) followed by T+[n+]

Drawn pairs leave Y+ and Y− for good, so no pair appears twice among a problem's traces, every
trace ends on a correct pair, and failures are strictly fewer than successes.

*One pair per sample in a trace.* A sample with several kept reflections forms several pairs, and
a trace must never show the same sample twice. We guarantee it by drawing each trace's pairs one at
a time, uniformly among the pairs left whose sample is not yet in the trace; the counts are capped
accordingly: |Y+| and |Y−| above read "the number of distinct samples left in Y+ (Y−)". Since every
trace removes at least one pair from Y+, the loop ends and every correct pair is used.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from skillfactory.compose.pair import Pair
from skillfactory.compose.phrases import (
    BACKTRACK_PHRASES,
    CONFIRM_PHRASES,
    ENDING_PHRASES,
    GENERIC_GLUE,
    GLUE_AFTER_CORRECT,
    GLUE_AFTER_INCORRECT,
)

TraceStyle = Literal["reflect", "samples", "raw"]
"""How a trace is written: samples with reflections (the method), samples only, or the single
sample's own text with no trace structure (STaR)."""

GlueStyle = Literal["matched", "matched-or-generic", "generic"]
"""Where the phrase before each sample after the first comes from: the class matched to whether
the sample before was correct (the method), that class or the generic one (the released formats
with reflections), or the generic class only (the released `no_reflection`)."""

EndingStyle = Literal["plain", "backtrack", "confirm"]
"""What follows `</think>` before the ending phrase: nothing, a backtrack phrase and an earlier
correct sample restated (released `*C*IC`), or a confirmation phrase (released `*CC`)."""

DEFAULT_MAX_SAMPLES_PER_TRACE = 5
"""L_max of Algorithm 1 (the paper's value)."""


@dataclass(frozen=True)
class Trace:
    """An ordered list of pairs and how to write them (see `TraceStyle`)."""

    pairs: tuple[Pair, ...]
    style: TraceStyle = "reflect"
    glue: GlueStyle = "matched"
    ending: EndingStyle = "plain"
    restated: Pair | None = None
    """The earlier correct pair a `backtrack` ending restates after `</think>` and answers with."""
    variant: str | None = None
    """The variant that built this trace when a set of variants built the problem's traces."""

    def __post_init__(self) -> None:
        if (self.ending == "backtrack") != (self.restated is not None):
            raise ValueError("a backtrack ending, and only it, restates an earlier pair")

    @property
    def n_correct(self) -> int:
        """How many of the trace's samples are correct."""
        return sum(pair.correct for pair in self.pairs)

    @property
    def n_incorrect(self) -> int:
        """How many of the trace's samples are incorrect."""
        return len(self.pairs) - self.n_correct

    @property
    def final_answer(self) -> str:
        """The answer the trace states after `</think>`: the restated pair's, else the last's."""
        return (self.restated or self.pairs[-1]).answer


def problem_rng(seed: int, problem_id: str, purpose: str = "draw") -> random.Random:
    """A generator seeded from the run seed, the problem id and a purpose, stable across runs.

    A SHA-256 of the three (never Python's salted `hash()`) keeps traces identical from run to run
    and independent of the order problems arrive in; separate purposes (drawing pairs, choosing
    phrases) keep a change in one from shifting the other.
    """
    digest = hashlib.sha256(f"{seed}\x00{problem_id}\x00{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def draw_distinct_samples(pool: list[Pair], n: int, rng: random.Random) -> list[Pair]:
    """Draw up to `n` pairs from `pool` without replacement, at most one per sample.

    Each draw is uniform among the pairs left whose sample is not drawn yet; drawn pairs are
    removed from `pool` (swap-remove, so order in the pool is not meaningful).
    """
    drawn: list[Pair] = []
    used: set[int] = set()
    for _ in range(n):
        eligible = [i for i, pair in enumerate(pool) if pair.sample.index not in used]
        if not eligible:
            break
        position = eligible[rng.randrange(len(eligible))]
        pair = pool[position]
        pool[position] = pool[-1]
        pool.pop()
        used.add(pair.sample.index)
        drawn.append(pair)
    return drawn


def distinct_samples(pool: Sequence[Pair]) -> int:
    """How many different samples the pairs of `pool` come from."""
    return len({pair.sample.index for pair in pool})


def draw_counts(
    n_correct_left: int, n_incorrect_left: int, max_samples: int, rng: random.Random
) -> tuple[int, int]:
    """n+ = min(U[1, L_max], |Y+|) and n− = min(U[0, n+ − 1], |Y−|) of Algorithm 1."""
    n_plus = min(rng.randint(1, max_samples), n_correct_left)
    n_minus = min(rng.randint(0, n_plus - 1), n_incorrect_left)
    return n_plus, n_minus


def assemble_traces(
    pairs: Sequence[Pair],
    rng: random.Random,
    max_samples: int = DEFAULT_MAX_SAMPLES_PER_TRACE,
    keep_order: bool = True,
    style: TraceStyle = "reflect",
) -> list[Trace]:
    """Algorithm 1 over one problem's kept pairs.

    With `keep_order=False` (the `no-sample-order` ablation) the whole trace is shuffled, so it
    need not end on a correct pair; the draws are otherwise the same.
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be at least 1, got {max_samples}")
    correct = [pair for pair in pairs if pair.correct]
    incorrect = [pair for pair in pairs if not pair.correct]
    traces: list[Trace] = []
    while correct:
        n_plus, n_minus = draw_counts(
            distinct_samples(correct), distinct_samples(incorrect), max_samples, rng
        )
        t_plus = draw_distinct_samples(correct, n_plus, rng)
        t_minus = draw_distinct_samples(incorrect, n_minus, rng)
        traces.append(Trace(order_trace(t_plus, t_minus, rng, keep_order), style))
    return traces


def order_trace(
    t_plus: list[Pair], t_minus: list[Pair], rng: random.Random, keep_order: bool = True
) -> tuple[Pair, ...]:
    """shuffle(T− ∪ T+[1 : n+ − 1]) followed by T+[n+]; everything shuffled without `keep_order`."""
    if not keep_order:
        everything = t_minus + t_plus
        rng.shuffle(everything)
        return tuple(everything)
    head = t_minus + t_plus[:-1]
    rng.shuffle(head)
    return (*head, t_plus[-1])


def _sample_block(pair: Pair) -> str:
    return f"<sample>\n{pair.body}\n</sample>"


def _reflect_block(pair: Pair) -> str:
    return f"<reflect>\n{pair.critique}\n</reflect>"


def glue_phrase(previous_correct: bool, rng: random.Random, style: GlueStyle = "matched") -> str:
    """A phrase that opens the next sample, from the class(es) `style` picks for the previous one."""
    if style == "generic":
        return rng.choice(GENERIC_GLUE)
    matched = GLUE_AFTER_CORRECT if previous_correct else GLUE_AFTER_INCORRECT
    return rng.choice(matched + GENERIC_GLUE if style == "matched-or-generic" else matched)


def closing_text(trace: Trace, rng: random.Random) -> str:
    """What stands between `</think>` and the final `<answer>` (see `EndingStyle`)."""
    ending = rng.choice(ENDING_PHRASES)
    if trace.restated is not None:
        return "\n".join((rng.choice(BACKTRACK_PHRASES), trace.restated.body, ending))
    if trace.ending == "confirm":
        return f"{rng.choice(CONFIRM_PHRASES)}\n{ending}"
    return ending


def format_trace(trace: Trace, rng: random.Random) -> str:
    """The assistant text of a trace: `<think>`, samples (and reflections), closing, `<answer>`.

    A `raw` trace is its single sample's text as the model wrote it (cut after its answer).
    """
    if not trace.pairs:
        raise ValueError("a trace needs at least one pair")
    if trace.style == "raw":
        if len(trace.pairs) != 1:
            raise ValueError("a raw trace holds exactly one sample")
        return trace.pairs[0].body
    lines = ["<think>"]
    for position, pair in enumerate(trace.pairs):
        if position > 0:
            lines.append(glue_phrase(trace.pairs[position - 1].correct, rng, trace.glue))
        lines.append(_sample_block(pair))
        if trace.style == "reflect":
            lines.append(_reflect_block(pair))
    lines.append("</think>")
    closing = closing_text(trace, rng)
    return "\n".join(lines) + f"\n\n{closing}\n\n<answer>{trace.final_answer}</answer>"
