"""What a running pipeline reports, as typed events: the CLI prints them, the learner service turns
them into run events and metrics.

Every event names its stage (`stage`); `EventCallback` receives them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skillfactory.runspec import Stage
from skillfactory.train.step_record import StepRecord


@dataclass(frozen=True)
class StageStarted:
    """A stage began."""

    stage: Stage


@dataclass(frozen=True)
class StageFinished:
    """A stage ended; `seconds` of wall time."""

    stage: Stage
    seconds: float


@dataclass(frozen=True)
class DataProgress:
    """Stage 1 finished a chunk: `done` of `total` problems sampled."""

    done: int
    total: int
    stage: Stage = "data"


@dataclass(frozen=True)
class GRPOStep:
    """The learner trained one step."""

    record: StepRecord
    stage: Stage = "grpo"


@dataclass(frozen=True)
class EvalTaskDone:
    """One model was evaluated on one task."""

    model: str
    task: str
    metrics: dict[str, Any] = field(default_factory=dict)
    stage: Stage = "eval"


StageEvent = StageStarted | StageFinished | DataProgress | GRPOStep | EvalTaskDone
EventCallback = Callable[[StageEvent], None]
"""Called with each event as stages start, progress and finish."""
