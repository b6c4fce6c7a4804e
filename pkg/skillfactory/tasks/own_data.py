"""Tasks made of one's own data: the `datasets` of a run spec (`TaskDatasetSpec`).

A dataset task reads question/answer rows from a JSONL file or a Hugging Face Hub dataset
(through `datasets`, imported only then), renders each row's prompt with the spec's template, and
draws a seeded sample of a split exactly as the built-in dataset tasks do (`seeded_sample`). Its
problems carry the grader's kind in their data (`grader`), so any process can grade them from the
problem alone — the reward service, the composer and the rollout workers never see the run spec
(`skillfactory.tasks.task_of`). Graders are the built-in tasks' bounded ones: `numeric` is gsm8k's, `math` is
math500's (its sympy check runs in a worker process within a time budget), `choice` is csqa's.

A run registers its datasets (`skillfactory.tasks.use_datasets`) before its stages look tasks up by name, so
`get_task("my-task")` finds them wherever a built-in name is accepted. A bad row names its line
and the column (and the spec field) that is wrong.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from skillfactory.runspec import TaskDatasetSpec
from skillfactory.tasks.base import Problem, ProblemFieldError
from skillfactory.tasks.csqa import chosen_label, read_choices
from skillfactory.tasks.dataset_rows import DatasetUnavailableError, seeded_sample
from skillfactory.tasks.gsm8k import final_number
from skillfactory.tasks.math500 import Math500Task

GRADER_KEY = "grader"
"""Problem data key naming the grader of a dataset task's problem."""
GRADERS = ("exact", "numeric", "math", "choice")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MAX_FILE_BYTES = 1 << 30
"""Largest JSONL file a dataset task reads."""
MAX_EXACT_CHARS = 10_000
"""Longer answers are not compared (wrong)."""

_MATH = Math500Task()
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


class DatasetRowError(ValueError):
    """A row or column of a dataset task that cannot become a problem; the message names it."""


def normalize_exact(text: str) -> str:
    """Trimmed, case-folded, single-spaced, without a trailing period: how `exact` compares."""
    return " ".join(text.casefold().split()).rstrip(".")


def check_answer(grader: str, problem: Problem, answer: str) -> bool:
    """Whether `answer` (the extracted `<answer>`) is right by `grader`; bounded on any text."""
    gold = problem.answer
    if grader == "exact":
        return len(answer) <= MAX_EXACT_CHARS and normalize_exact(answer) == normalize_exact(gold)
    if grader == "numeric":
        value = final_number(answer)
        return value is not None and value == final_number(gold)
    if grader == "math":
        return _MATH.check(problem, answer)
    if grader == "choice":
        choices = problem.data.get("choices")
        if isinstance(choices, dict):
            return chosen_label(answer, read_choices(problem)) == gold.strip().upper()
        lone = re.fullmatch(r"\s*\(?([A-Za-z])[).:]?\s*", answer[:20])
        return lone is not None and lone.group(1).upper() == gold.strip().upper()
    raise ProblemFieldError(GRADER_KEY)


class GradedByField:
    """A problem's task when only its data says how to grade it (a dataset task seen outside the
    run that defined it): the grader named by `problem.data["grader"]`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def problems(self, n: int, seed: int = 0, split: str = "train") -> list[Problem]:
        raise DatasetUnavailableError(f"{self.name} is a dataset task of a run spec")

    def check(self, problem: Problem, answer: str) -> bool:
        grader = problem.data.get(GRADER_KEY)
        if grader not in GRADERS:
            raise ProblemFieldError(GRADER_KEY)
        return check_answer(str(grader), problem, answer)


class OwnDatasetTask:
    """A task of one's own rows (see the module docstring)."""

    def __init__(self, spec: TaskDatasetSpec, where: str = "datasets") -> None:
        self.spec = spec
        self.name = spec.name
        self.where = where
        """The spec path of this dataset, for error messages (e.g. `datasets.0`)."""
        self._problems: dict[str, list[Problem]] = {}
        self._lock = threading.Lock()

    # rows -----------------------------------------------------------------------------------

    def rows(self, split: str) -> list[dict[str, Any]]:
        """The rows of `split` ("train" or "test"; any other name is a Hub split)."""
        spec = self.spec
        if spec.path is not None:
            path = spec.test_path if split == "test" and spec.test_path is not None else spec.path
            field = "test_path" if path == spec.test_path and split == "test" else "path"
            return read_jsonl(Path(path), f"{self.where}.{field}")
        hub_split = {"train": spec.train_split, "test": spec.test_split}.get(split, split)
        return read_hub_rows(str(spec.hub), spec.config, hub_split)

    def problems(self, n: int, seed: int = 0, split: str = "train") -> list[Problem]:
        """A seeded sample of `n` problems of `split` (all of them, shuffled, when n is larger)."""
        with self._lock:
            problems = self._problems.get(split)
            if problems is None:
                problems = self._problems[split] = self.problems_from_rows(self.rows(split), split)
        return [problems[i] for i in seeded_sample(len(problems), n, seed)]

    def problems_from_rows(self, rows: Iterable[dict[str, Any]], split: str) -> list[Problem]:
        """Every row as a problem; `DatasetRowError` names the first bad row and column."""
        return [self.problem(row, index, split) for index, row in enumerate(rows)]

    def problem(self, row: dict[str, Any], index: int, split: str) -> Problem:
        spec = self.spec
        where = f"{self.name} {split} row {index + 1}"
        if not isinstance(row, dict):
            raise DatasetRowError(f"{where}: not a JSON object")
        columns = {"question": spec.question, "answer": spec.answer}
        if spec.id is not None:
            columns["id"] = spec.id
        if spec.choices is not None:
            columns["choices"] = spec.choices
        for field, column in columns.items():
            value = row.get(column)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DatasetRowError(
                    f"{where}: no {column!r} column ({self.where}.{field} names it; "
                    f"the row has {', '.join(map(repr, sorted(row))) or 'no columns'})"
                )
        data: dict[str, Any] = {GRADER_KEY: spec.grader}
        values = {key: _text(value) for key, value in row.items()}
        values.setdefault("question", values[spec.question])  # the default template's column
        if spec.choices is not None:
            options = row[spec.choices]
            if not isinstance(options, list) or not 1 <= len(options) <= len(LETTERS):
                raise DatasetRowError(
                    f"{where}: column {spec.choices!r} ({self.where}.choices) must be a list of "
                    f"1 to {len(LETTERS)} options"
                )
            labels = list(LETTERS[: len(options)])
            data["choices"] = {"label": labels, "text": [_text(o) for o in options]}
            values[spec.choices] = "\n".join(
                f"{label}. {_text(o)}" for label, o in zip(labels, options, strict=True)
            )
            values.setdefault("choices", values[spec.choices])
        question = render(spec.template, values, f"{where}: {self.where}.template")
        row_id = _text(row[spec.id]) if spec.id is not None else f"{split}-{index}"
        answer = _text(row[spec.answer]).strip()
        return Problem(f"{self.name}-{row_id}", self.name, question, answer, data)

    def check(self, problem: Problem, answer: str) -> bool:
        """Whether the answer is right by this dataset's grader."""
        return check_answer(self.spec.grader, problem, answer)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(template: str, values: dict[str, str], where: str) -> str:
    """`template` with each `{column}` replaced by the row's value (`{{`, `}}`: braces). Only
    plain column names are substituted (no attribute or index lookups, unlike `str.format`)."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        column = match.group(1)
        if column not in values:
            raise DatasetRowError(f"{where} uses {{{column}}}, a column the row does not have")
        return values[column]

    return _PLACEHOLDER.sub(substitute, template)


def read_jsonl(path: Path, field: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (blank lines skipped); errors name the line and `field`."""
    if not path.is_file():
        raise DatasetUnavailableError(f"{field}: {path} is not a file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DatasetUnavailableError(f"{field}: {path} is larger than {MAX_FILE_BYTES} bytes")
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetRowError(
                    f"{field}: {path} line {number}: not JSON ({error})"
                ) from None
            if not isinstance(row, dict):
                raise DatasetRowError(f"{field}: {path} line {number}: not a JSON object")
            rows.append(row)
    if not rows:
        raise DatasetRowError(f"{field}: {path} has no rows")
    return rows


def read_hub_rows(dataset: str, config: str | None, split: str) -> list[dict[str, Any]]:
    """The rows of a Hub dataset split (needs `datasets` and the network or its cache)."""
    try:
        # deferred: heavy or optional (datasets)
        from datasets import load_dataset
    except ImportError:
        raise DatasetUnavailableError(
            "a Hub dataset task needs the datasets package: pip install datasets"
        ) from None
    return [dict(row) for row in load_dataset(dataset, config, split=split)]


# the run's datasets, by name ---------------------------------------------------------------

_registered: dict[str, OwnDatasetTask] = {}
_registry_lock = threading.Lock()


def register_datasets(datasets: Sequence[TaskDatasetSpec], builtin: Iterable[str] = ()) -> None:
    """Make a run's dataset tasks known to `get_task` by name. A name of a built-in task is
    refused, and so is a name another run in this process defined differently."""
    taken = set(builtin)
    with _registry_lock:
        for index, spec in enumerate(datasets):
            where = f"datasets.{index}"
            if spec.name in taken:
                raise ValueError(f"{where}.name: {spec.name!r} is a built-in task's name")
            known = _registered.get(spec.name)
            if known is not None and known.spec != spec:
                raise ValueError(
                    f"{where}: a dataset task {spec.name!r} with another definition is in use "
                    "in this process; give this one another name"
                )
            if known is None:
                _registered[spec.name] = OwnDatasetTask(spec, where)


def registered(name: str) -> OwnDatasetTask | None:
    """The registered dataset task called `name`, if any."""
    return _registered.get(name)
