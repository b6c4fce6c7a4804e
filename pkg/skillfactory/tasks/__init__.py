"""The task registry: every task of the method by its full name, e.g. `get_task("countdown-4")`.

Generated tasks (countdown, multiplication, letter-countdown, acronym) are seeded generators;
dataset tasks (gsm8k, csqa, math500, openthoughts) read packaged offline data by default, and
their Hugging Face dataset (`source="hf"`, through `datasets`) when the name ends in `@hf`, e.g.
`openthoughts@hf` (OpenThoughts3-1.2M; the packaged openthoughts rows are a small test sample). `countdown-N` grades
every given number used exactly once; `countdown-subset-N` is the same task graded at most once
per number (see `skillfactory.tasks.countdown`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache, partial
from typing import cast

from skillfactory.runspec import TaskDatasetSpec
from skillfactory.tasks.acronym import AcronymTask
from skillfactory.tasks.base import Grade, Problem, ProblemFieldError, Task, grade
from skillfactory.tasks.countdown import CountdownTask
from skillfactory.tasks.csqa import CommonsenseQATask
from skillfactory.tasks.dataset_rows import DatasetTask
from skillfactory.tasks.gsm8k import GSM8KTask
from skillfactory.tasks.letter_countdown import LetterCountdownTask
from skillfactory.tasks.math500 import Math500Task
from skillfactory.tasks.multiplication import MultiplicationTask
from skillfactory.tasks.openthoughts import OpenThoughtsTask
from skillfactory.tasks.own_data import (
    GRADER_KEY,
    GradedByField,
    OwnDatasetTask,
    register_datasets,
    registered,
)


def _factories() -> dict[str, Callable[[], Task]]:
    factories: dict[str, Callable[[], Task]] = {}
    for size in (3, 4, 5, 6):
        factories[f"countdown-{size}"] = partial(CountdownTask, size, "exactly-once")
    for size in (3, 4, 5, 6):
        factories[f"countdown-subset-{size}"] = partial(CountdownTask, size, "at-most-once")
    for digits in (1, 2, 3, 4, 5):
        factories[f"multiplication-{digits}"] = partial(MultiplicationTask, digits)
    for length in (4, 5):
        factories[f"letter-countdown-{length}"] = partial(LetterCountdownTask, length)
    for length in (4, 5):
        factories[f"acronym-{length}"] = partial(AcronymTask, length)
    factories["gsm8k"] = GSM8KTask
    factories["csqa"] = CommonsenseQATask
    factories["math500"] = Math500Task
    factories["openthoughts"] = OpenThoughtsTask
    return factories


_FACTORIES = _factories()

TASK_NAMES: tuple[str, ...] = tuple(_FACTORIES)
"""Every concrete task name, in a stable order (each dataset task also as `<name>@hf`)."""
HF_SUFFIX = "@hf"
"""Appended to a dataset task's name: the same task read from its Hugging Face dataset."""


class UnknownTaskError(ValueError):
    """A task name that is not in `TASK_NAMES`."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)} "
            f"(a dataset task read from the Hub: <name>{HF_SUFFIX})"
        )
        self.name = name


def get_task(name: str) -> Task:
    """The task called `name` (one shared instance per name): a built-in task, or a dataset task
    of a run spec registered in this process (`use_datasets`); raises `UnknownTaskError`."""
    own = registered(name)
    return own if own is not None else _builtin_task(name)


def use_datasets(datasets: Sequence[TaskDatasetSpec]) -> None:
    """Register a run spec's dataset tasks (`skillfactory.tasks.own_data`) under their names;
    ValueError naming the field when one takes a built-in task's name."""
    register_datasets(datasets, builtin=TASK_NAMES)


def task_of(problem: Problem) -> Task:
    """The task that grades `problem`: `get_task(problem.task)`, else — a dataset task of a run
    spec this process does not know (the reward service, the composer) — the grader its data
    names. Raises `UnknownTaskError` when neither applies."""
    try:
        return get_task(problem.task)
    except UnknownTaskError:
        if GRADER_KEY in problem.data:
            return GradedByField(problem.task)
        raise


@cache
def _builtin_task(name: str) -> Task:
    base = name.removesuffix(HF_SUFFIX)
    factory = _FACTORIES.get(base)
    if factory is None:
        raise UnknownTaskError(name)
    if base == name:
        return factory()
    if not (isinstance(factory, type) and issubclass(factory, DatasetTask)):
        raise UnknownTaskError(name)  # a generated task has no Hub dataset
    return cast(Callable[..., Task], factory)(source="hf")


__all__ = [
    "TASK_NAMES",
    "AcronymTask",
    "CommonsenseQATask",
    "CountdownTask",
    "GSM8KTask",
    "Grade",
    "LetterCountdownTask",
    "Math500Task",
    "MultiplicationTask",
    "OpenThoughtsTask",
    "OwnDatasetTask",
    "Problem",
    "ProblemFieldError",
    "Task",
    "UnknownTaskError",
    "get_task",
    "grade",
    "task_of",
    "use_datasets",
]
