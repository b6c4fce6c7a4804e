"""Skill-usage metrics of responses: accuracy, #Ans, #Ref, the share of responses that reflect
with a verdict, verdict F1, lengths.

Each `<verdict>` predicts whether the sample it follows is correct. We walk the response's
`<sample>` blocks; the reflection of a sample is the first `<reflect>` block that starts after the
sample ends and before the next sample starts. The truth is the grade of that sample's last
`<answer>` (a sample without an answer is incorrect). A sample without a reflection makes no
prediction; a reflection with a missing or odd verdict is a prediction of neither class (so it
counts against recall only).

Division by zero (no prediction of a class, or no sample of it) gives 0.0, the usual convention;
the raw counts are kept beside every score.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from skillfactory.parsing import (
    count_answers,
    count_reflections,
    extract_answer,
    find_blocks,
    parse_verdict,
)
from skillfactory.tasks.base import Problem, ProblemFieldError, Task

AnswerCheck = Callable[[str], bool]
"""Whether an extracted answer is correct for the problem at hand."""

TokenCount = Callable[[str], int]
"""How many tokens a text has (e.g. `lambda t: len(tokenizer.encode(t))`)."""

VerdictClass = Literal["correct", "incorrect"]
VERDICT_CLASSES: tuple[VerdictClass, ...] = ("correct", "incorrect")


def task_check(task: Task, problem: Problem) -> AnswerCheck:
    """An `AnswerCheck` from a task's grader; a grader error on model text is a wrong answer."""

    def check(answer: str) -> bool:
        try:
            return bool(task.check(problem, answer))
        except ProblemFieldError:
            raise
        except Exception:  # hostile model text must never crash an evaluation
            return False

    return check


def is_correct(text: str | None, check: AnswerCheck) -> bool:
    """Grade the last `<answer>` of a text; no answer is wrong."""
    if text is None:
        return False
    answer = extract_answer(text)
    return answer is not None and check(answer)


@dataclass(frozen=True)
class VerdictOutcome:
    """One verdict: what it predicted (None: missing/odd) and whether its sample was correct."""

    predicted: bool | None
    actual: bool


def verdict_outcomes(response: str, check: AnswerCheck) -> list[VerdictOutcome]:
    """Every (sample, reflection) pair of a response, as prediction and truth."""
    samples = find_blocks(response, "sample")
    reflects = find_blocks(response, "reflect")
    outcomes: list[VerdictOutcome] = []
    for position, sample in enumerate(samples):
        limit = samples[position + 1].start if position + 1 < len(samples) else len(response)
        reflect = next((r for r in reflects if sample.end <= r.start < limit), None)
        if reflect is None:
            continue
        outcomes.append(VerdictOutcome(parse_verdict(reflect.text), is_correct(sample.text, check)))
    return outcomes


def reflects_with_verdict(response: str) -> bool:
    """Whether any `<reflect>` block of the response holds a `<verdict>` block."""
    return any(find_blocks(r.text, "verdict") for r in find_blocks(response, "reflect"))


@dataclass
class ClassScores:
    """Precision, recall and F1 of the verdicts for one class, with the counts behind them."""

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def precision(self) -> float:
        """Of the verdicts naming this class, the share that was right."""
        return _ratio(self.true_positives, self.true_positives + self.false_positives)

    @property
    def recall(self) -> float:
        """Of the samples of this class, the share whose verdict named it."""
        return _ratio(self.true_positives, self.true_positives + self.false_negatives)

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        return _ratio(2 * self.true_positives,
                      2 * self.true_positives + self.false_positives + self.false_negatives)  # fmt: skip

    def add(self, outcome: VerdictOutcome, positive: bool) -> None:
        """Count one verdict with `positive` as this class's label (True: correct)."""
        predicted_here = outcome.predicted is positive
        actual_here = outcome.actual is positive
        self.true_positives += predicted_here and actual_here
        self.false_positives += predicted_here and not actual_here
        self.false_negatives += actual_here and not predicted_here

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready scores and counts."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tp": self.true_positives,
            "fp": self.false_positives,
            "fn": self.false_negatives,
        }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def verdict_scores(outcomes: Iterable[VerdictOutcome]) -> dict[VerdictClass, ClassScores]:
    """Precision/recall/F1 of the verdicts for the correct and the incorrect class."""
    scores: dict[VerdictClass, ClassScores] = {"correct": ClassScores(), "incorrect": ClassScores()}
    for outcome in outcomes:
        scores["correct"].add(outcome, True)
        scores["incorrect"].add(outcome, False)
    return scores


@dataclass(frozen=True)
class LengthStats:
    """Distribution of response lengths. `p90` is the nearest-rank 90th percentile."""

    count: int
    mean: float
    median: float
    p90: float
    max: float

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready statistics."""
        return {"count": self.count, "mean": self.mean, "median": self.median,
                "p90": self.p90, "max": self.max}  # fmt: skip


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (`q` in [0, 100]) of non-empty values: the smallest value with at
    least q % of the values at or below it."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def length_stats(lengths: Sequence[float]) -> LengthStats:
    """Mean, median, p90 and max of lengths; all zero for no lengths."""
    if not lengths:
        return LengthStats(0, 0.0, 0.0, 0.0, 0.0)
    return LengthStats(
        count=len(lengths),
        mean=statistics.fmean(lengths),
        median=float(statistics.median(lengths)),
        p90=percentile(lengths, 90),
        max=float(max(lengths)),
    )


@dataclass(frozen=True)
class ResponseMetrics:
    """Skill metrics of one response."""

    correct: bool
    n_answers: int
    n_reflections: int
    verdicts: tuple[VerdictOutcome, ...]
    chars: int
    tokens: int | None = None
    reflects: bool = False
    """Whether the response holds a `<reflect>` block with a `<verdict>` in it: the trace
    structure SFT installs."""


def response_metrics(
    response: str, check: AnswerCheck, count_tokens: TokenCount | None = None
) -> ResponseMetrics:
    """Accuracy (final answer), #Ans, #Ref, verdict outcomes and length of one response."""
    return ResponseMetrics(
        correct=is_correct(response, check),
        n_answers=count_answers(response),
        n_reflections=count_reflections(response),
        verdicts=tuple(verdict_outcomes(response, check)),
        reflects=reflects_with_verdict(response),
        chars=len(response),
        tokens=count_tokens(response) if count_tokens is not None else None,
    )


@dataclass(frozen=True)
class SkillMetrics:
    """Skill metrics aggregated over many responses (e.g. k samples of every problem of a task)."""

    n_responses: int
    accuracy: float
    mean_answers: float
    mean_reflections: float
    verdict: dict[VerdictClass, ClassScores]
    reflect_share: float
    """Share of responses with a `<reflect>` block holding a `<verdict>`."""
    n_verdicts: int
    chars: LengthStats
    tokens: LengthStats | None = field(default=None)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready metrics."""
        return {
            "n_responses": self.n_responses,
            "accuracy": self.accuracy,
            "mean_answers": self.mean_answers,
            "mean_reflections": self.mean_reflections,
            "reflect_share": self.reflect_share,
            "n_verdicts": self.n_verdicts,
            "verdict": {name: scores.to_dict() for name, scores in self.verdict.items()},
            "chars": self.chars.to_dict(),
            "tokens": self.tokens.to_dict() if self.tokens is not None else None,
        }


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def aggregate(metrics: Sequence[ResponseMetrics]) -> SkillMetrics:
    """Combine per-response metrics: means, pooled verdict scores and length statistics.

    Token statistics are given only when every response has a token count.
    """
    outcomes = [outcome for m in metrics for outcome in m.verdicts]
    tokens = [m.tokens for m in metrics if m.tokens is not None]
    return SkillMetrics(
        n_responses=len(metrics),
        accuracy=_mean([float(m.correct) for m in metrics]),
        mean_answers=_mean([m.n_answers for m in metrics]),
        mean_reflections=_mean([m.n_reflections for m in metrics]),
        verdict=verdict_scores(outcomes),
        reflect_share=_mean([float(m.reflects) for m in metrics]),
        n_verdicts=len(outcomes),
        chars=length_stats([m.chars for m in metrics]),
        tokens=length_stats(tokens) if metrics and len(tokens) == len(metrics) else None,
    )


def skill_metrics(
    responses: Iterable[tuple[str, AnswerCheck]], count_tokens: TokenCount | None = None
) -> SkillMetrics:
    """Skill metrics of (response, check) pairs; `check` grades answers of that response's problem."""
    return aggregate([response_metrics(text, check, count_tokens) for text, check in responses])
