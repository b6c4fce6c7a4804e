"""What a composer run did: problems in, problems without a correct sample, pairs kept and
dropped by the verdict filter per class, traces out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from skillfactory.compose.pair import FilterCounts
from skillfactory.compose.trace import Trace


@dataclass
class ComposeSummary:
    """Counts accumulated over the problems of one run."""

    variant: str
    seed: int
    max_samples_per_trace: int
    problems_in: int = 0
    problems_without_correct: int = 0
    """Problems none of whose samples is correct: they yield no trace."""
    problems_without_trace: int = 0
    """Problems that yield no trace for any reason (no correct sample, all reflections dropped…)."""
    samples_in: int = 0
    samples_correct: int = 0
    filter: FilterCounts = field(default_factory=FilterCounts)
    traces_out: int = 0
    trace_lengths: Counter[int] = field(default_factory=Counter)
    """How many traces hold 1, 2, … samples."""

    def add_problem(
        self, n_samples: int, n_correct: int, counts: FilterCounts, traces: list[Trace]
    ) -> None:
        """Account for one problem."""
        self.problems_in += 1
        self.samples_in += n_samples
        self.samples_correct += n_correct
        self.problems_without_correct += n_correct == 0
        self.problems_without_trace += not traces
        self.filter.add(counts)
        self.traces_out += len(traces)
        self.trace_lengths.update(len(trace.pairs) for trace in traces)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (stable key order)."""
        return {
            "variant": self.variant,
            "seed": self.seed,
            "max_samples_per_trace": self.max_samples_per_trace,
            "problems_in": self.problems_in,
            "problems_without_correct": self.problems_without_correct,
            "problems_without_trace": self.problems_without_trace,
            "samples_in": self.samples_in,
            "samples_correct": self.samples_correct,
            "samples_unusable": self.filter.unusable_samples,
            "verdict_filter": {
                "correct": self.filter.correct.to_dict(),
                "incorrect": self.filter.incorrect.to_dict(),
            },
            "traces_out": self.traces_out,
            "trace_lengths": {str(n): self.trace_lengths[n] for n in sorted(self.trace_lengths)},
        }
