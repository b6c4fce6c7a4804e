"""Samples, reflections and the (sample, reflection) pairs the verdict filter keeps.

A *sample* is one graded solution; a *reflection* is the same model's critique of it, ending in a
`<verdict>`. The verdict filter keeps a reflection only when its verdict equals the sample's true
correctness; each kept reflection forms one *pair* with its sample, so a sample with several kept
reflections forms several pairs (which is why the trace assembler keeps one pair per sample in a
trace).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from skillfactory.parsing import extract_answer, find_blocks, parse_verdict
from skillfactory.prompts import HINT_PREFIX, mentions_hint

STRUCTURE_TAGS = ("think", "sample", "reflect")
"""Tags the trace format owns; a sample or reflection that writes them would break the structure."""

_STRUCTURE_TAG = re.compile(r"<\s*/?\s*(?:think|sample|reflect)\s*>", re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<\s*/?\s*answer\s*>", re.IGNORECASE)
_VERDICT_OPEN = re.compile(r"<\s*verdict\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Reflection:
    """A critique of one sample; `verdict` is parsed from its text (None when missing or odd)."""

    text: str
    verdict: bool | None


@dataclass(frozen=True)
class Sample:
    """One graded solution of a problem. `index` is its position among the problem's samples."""

    index: int
    text: str
    prompt_variant: str
    correct: bool
    reflections: tuple[Reflection, ...] = ()

    @property
    def answer(self) -> str | None:
        """The sample's final answer (its last `<answer>`), None when it gave none."""
        return extract_answer(self.text)


@dataclass(frozen=True)
class Pair:
    """A sample and one of its kept reflections: the unit Algorithm 1 draws.

    `body` and `critique` are the texts as they go into a trace (see `sample_body` and
    `reflection_critique`); `answer` is the sample's final answer.
    """

    sample: Sample
    reflection_index: int
    body: str
    critique: str
    answer: str

    @property
    def correct(self) -> bool:
        """Whether the sample of this pair is correct."""
        return self.sample.correct

    @property
    def key(self) -> tuple[int, int]:
        """Identity of the pair within its problem: (sample index, reflection index)."""
        return (self.sample.index, self.reflection_index)


def reflection_from_text(text: str) -> Reflection:
    """A reflection with its verdict parsed from the text."""
    return Reflection(text, parse_verdict(text))


def sample_body(text: str) -> str | None:
    """The sample text as it goes into a `<sample>` block: cut after its last `</answer>`.

    None when the sample cannot go into a trace: it has no answer, or it writes the trace's own
    structure tags (`<think>`, `<sample>`, `<reflect>`).
    """
    if _STRUCTURE_TAG.search(text) is not None:
        return None
    answers = find_blocks(text, "answer")
    if not answers or not answers[-1].text:
        return None
    last = answers[-1]
    if last.closed:
        return text[: last.end].strip()
    return text.rstrip() + "</answer>"


def reflection_critique(reflection: Reflection) -> str | None:
    """The reflection text as it goes into a `<reflect>` block, ending in a canonical verdict.

    Everything from the last `<verdict>` on is replaced by `<verdict>Correct</verdict>` or
    `<verdict>Incorrect</verdict>`. None when the reflection has no usable verdict or writes tags
    that would break the trace (structure tags, or an `<answer>` that would count as an attempt).
    """
    if reflection.verdict is None:
        return None
    text = reflection.text
    if _STRUCTURE_TAG.search(text) is not None or _ANSWER_TAG.search(text) is not None:
        return None
    opens = list(_VERDICT_OPEN.finditer(text))
    critique = text[: opens[-1].start()].strip() if opens else text.strip()
    verdict = "Correct" if reflection.verdict else "Incorrect"
    return (
        f"{critique}\n<verdict>{verdict}</verdict>" if critique else f"<verdict>{verdict}</verdict>"
    )


def usable_body(sample: Sample) -> str | None:
    """`sample_body`, or None also for a rationalization sample that betrays its hint."""
    if sample.prompt_variant.startswith(HINT_PREFIX) and mentions_hint(sample.text):
        return None
    return sample_body(sample.text)


@dataclass
class ClassCounts:
    """What the verdict filter did with the reflections of one class (correct or incorrect samples)."""

    kept: int = 0
    dropped_mismatch: int = 0
    """The verdict contradicts the sample's true correctness."""
    dropped_no_verdict: int = 0
    """No `<verdict>`, or one that is neither Correct nor Incorrect."""
    dropped_malformed: int = 0
    """The reflection writes trace tags or an `<answer>`."""

    @property
    def dropped(self) -> int:
        """All dropped reflections of the class."""
        return self.dropped_mismatch + self.dropped_no_verdict + self.dropped_malformed

    def add(self, other: ClassCounts) -> None:
        """Accumulate another count into this one."""
        self.kept += other.kept
        self.dropped_mismatch += other.dropped_mismatch
        self.dropped_no_verdict += other.dropped_no_verdict
        self.dropped_malformed += other.dropped_malformed

    def to_dict(self) -> dict[str, int]:
        """JSON-ready counts, with the total of dropped ones."""
        return {
            "kept": self.kept,
            "dropped": self.dropped,
            "dropped_mismatch": self.dropped_mismatch,
            "dropped_no_verdict": self.dropped_no_verdict,
            "dropped_malformed": self.dropped_malformed,
        }


@dataclass
class FilterCounts:
    """Verdict-filter counts per class, plus samples that could not enter a trace at all."""

    correct: ClassCounts = field(default_factory=ClassCounts)
    incorrect: ClassCounts = field(default_factory=ClassCounts)
    unusable_samples: int = 0
    """Samples without an answer, with trace tags in their text, or from a rationalization prompt
    whose text mentions the hint; their reflections are not counted by the filter."""

    def of(self, correct: bool) -> ClassCounts:
        """The counts of one class."""
        return self.correct if correct else self.incorrect

    def add(self, other: FilterCounts) -> None:
        """Accumulate another problem's counts."""
        self.correct.add(other.correct)
        self.incorrect.add(other.incorrect)
        self.unusable_samples += other.unusable_samples


@dataclass(frozen=True)
class FilterResult:
    """The kept pairs of a problem, in sample then reflection order, and the filter's counts."""

    pairs: tuple[Pair, ...]
    counts: FilterCounts


def _judge(sample: Sample, body: str, index: int, counts: ClassCounts) -> Pair | None:
    reflection = sample.reflections[index]
    if reflection.verdict is None:
        counts.dropped_no_verdict += 1
        return None
    if reflection.verdict != sample.correct:
        counts.dropped_mismatch += 1
        return None
    critique = reflection_critique(reflection)
    if critique is None:
        counts.dropped_malformed += 1
        return None
    counts.kept += 1
    return Pair(sample, index, body, critique, extract_answer(body) or "")


def verdict_filter(samples: Sequence[Sample]) -> FilterResult:
    """Keep each reflection whose verdict equals its sample's graded correctness.

    A missing or odd verdict is dropped, as is a reflection that would break the trace format.
    Samples that cannot enter a trace (no answer, trace tags in the text, a mentioned hint) are
    counted apart.
    """
    counts = FilterCounts()
    pairs: list[Pair] = []
    for sample in samples:
        body = usable_body(sample)
        if body is None:
            counts.unusable_samples += 1
            continue
        for index in range(len(sample.reflections)):
            pair = _judge(sample, body, index, counts.of(sample.correct))
            if pair is not None:
                pairs.append(pair)
    return FilterResult(tuple(pairs), counts)


def bare_pairs(samples: Sequence[Sample]) -> tuple[tuple[Pair, ...], int]:
    """One reflection-less pair per usable sample, for the variants that show no reflection.

    Returns the pairs and the number of unusable samples.
    """
    pairs: list[Pair] = []
    unusable = 0
    for sample in samples:
        body = usable_body(sample)
        if body is None:
            unusable += 1
            continue
        pairs.append(Pair(sample, -1, body, "", extract_answer(body) or ""))
    return tuple(pairs), unusable
