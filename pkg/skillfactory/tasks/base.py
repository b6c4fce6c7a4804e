"""What every task provides: problems, the question text, answer extraction and a grader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from skillfactory.parsing import extract_answer

PROBLEM_KEYS = ("id", "task", "question", "answer")
"""Keys every problem record has; task-specific fields (numbers, target, letters…) sit beside them."""


@dataclass(frozen=True)
class Problem:
    """One problem of a task. `answer` is a reference answer (for countdown one valid expression);
    `data` holds the task-specific fields a grader needs (e.g. countdown's numbers and target)."""

    id: str
    task: str
    question: str
    answer: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The flat JSON record the generators emit: the four common keys plus the task fields."""
        return {
            "id": self.id,
            "task": self.task,
            "question": self.question,
            "answer": self.answer,
            **self.data,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], task: str | None = None) -> Problem:
        """Inverse of `to_record`; raises `ProblemFieldError` naming the first missing field."""
        name = task if task is not None else record.get("task")
        if not isinstance(name, str):
            raise ProblemFieldError("task")
        values: dict[str, str] = {}
        for key in ("id", "question", "answer"):
            if key not in record:
                raise ProblemFieldError(key)
            values[key] = str(record[key])
        data = {k: v for k, v in record.items() if k not in PROBLEM_KEYS}
        return cls(values["id"], name, values["question"], values["answer"], data)


class ProblemFieldError(ValueError):
    """A problem record lacks a field its task needs."""

    def __init__(self, field_name: str) -> None:
        super().__init__(f"missing field {field_name!r}")
        self.field_name = field_name


@dataclass(frozen=True)
class Grade:
    """The extracted answer (None when the response has none) and whether it is correct."""

    answer: str | None
    correct: bool


class Task(Protocol):
    """A task: a source of problems and a grader. Implementations never raise on model text."""

    name: str

    def problems(self, n: int, seed: int = 0, split: str = "train") -> list[Problem]:
        """`n` problems; generated tasks use `seed`, dataset tasks take a seeded sample of `split`."""
        ...

    def check(self, problem: Problem, answer: str) -> bool:
        """Whether an extracted answer solves the problem. Must return in bounded time on any
        string, and treat anything it cannot parse as wrong."""
        ...


def grade(task: Task, problem: Problem, response: str) -> Grade:
    """Extract the last `<answer>` of a response and check it; a missing answer is wrong."""
    answer = extract_answer(response)
    if answer is None:
        return Grade(None, False)
    try:
        correct = task.check(problem, answer)
    except ProblemFieldError:
        raise
    except Exception:  # a grader bug on hostile text is a wrong answer, never a crash
        correct = False
    return Grade(answer, bool(correct))


TaskFactory = Callable[[str], Task]
"""Builds a task from its full name, e.g. "countdown-4"."""
