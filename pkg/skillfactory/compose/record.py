"""The composer's JSONL records: graded samples of a problem in, SFT chat records out.

Input, one record per problem (task-specific fields such as `numbers`/`target` may sit beside the
common ones)::

    {"id", "task", "question", "answer",
     "samples": [{"text", "prompt_variant", "correct", "reflections": [{"text"}]}]}

`correct` may be omitted; the sample is then graded with its task's grader. Verdicts are parsed
from the reflection text. Output, one record per trace::

    {"id", "messages": [{"role": "user", ...}, {"role": "assistant", ...}], "meta": {...}}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skillfactory.compose.pair import Sample, reflection_from_text
from skillfactory.compose.trace import Trace
from skillfactory.tasks import task_of
from skillfactory.tasks.base import Problem, ProblemFieldError, grade

SampleGrader = Callable[[Problem, str], bool]
"""Grades a sample's text against its problem (used when a sample has no `correct` field)."""

UNKNOWN_PROMPT_VARIANT = "unknown"
"""The prompt variant of a sample whose record does not name one."""


class RecordError(ValueError):
    """A bad input record: names the line (1-based) and the offending field."""

    def __init__(self, line: int, field: str, message: str) -> None:
        super().__init__(f"line {line}: field {field!r}: {message}")
        self.line = line
        self.field = field


@dataclass(frozen=True)
class ProblemSamples:
    """One problem and its graded samples, as read from an input record."""

    problem: Problem
    samples: tuple[Sample, ...]


def grade_with_task(problem: Problem, text: str) -> bool:
    """The default `SampleGrader`: the problem's own task grades the text's last `<answer>`."""
    return grade(task_of(problem), problem, text).correct


def _require(record: dict[str, Any], key: str, kind: type, line: int, where: str = "") -> Any:
    name = f"{where}{key}"
    if key not in record:
        raise RecordError(line, name, "missing")
    value = record[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RecordError(line, name, f"must be {kind.__name__}, got {type(value).__name__}")
    return value


def _optional(
    record: dict[str, Any], key: str, kind: type, default: Any, line: int, where: str
) -> Any:
    if key not in record or record[key] is None:
        return default
    return _require(record, key, kind, line, where)


def _reflections(raw: dict[str, Any], line: int, where: str) -> tuple[Any, ...]:
    items = _optional(raw, "reflections", list, [], line, where)
    reflections = []
    for index, item in enumerate(items):
        field = f"{where}reflections[{index}]"
        if not isinstance(item, dict):
            raise RecordError(line, field, f"must be an object, got {type(item).__name__}")
        reflections.append(reflection_from_text(_require(item, "text", str, line, f"{field}.")))
    return tuple(reflections)


def _graded(problem: Problem, text: str, grader: SampleGrader, line: int) -> bool:
    try:
        return grader(problem, text)
    except ProblemFieldError as error:
        raise RecordError(
            line, error.field_name, f"missing (needed by task {problem.task!r})"
        ) from error
    except ValueError as error:  # UnknownTaskError is a ValueError
        raise RecordError(line, "task", str(error)) from error


def _sample(raw: Any, index: int, problem: Problem, grader: SampleGrader, line: int) -> Sample:
    where = f"samples[{index}]."
    if not isinstance(raw, dict):
        raise RecordError(line, where[:-1], f"must be an object, got {type(raw).__name__}")
    text = _require(raw, "text", str, line, where)
    variant = _optional(raw, "prompt_variant", str, UNKNOWN_PROMPT_VARIANT, line, where)
    correct = _optional(raw, "correct", bool, None, line, where)
    if correct is None:
        correct = _graded(problem, text, grader, line)
    return Sample(index, text, variant, correct, _reflections(raw, line, where))


def _problem(record: dict[str, Any], line: int) -> Problem:
    for key in ("id", "task", "question", "answer"):
        if key not in record:
            raise RecordError(line, key, "missing")
    _require(record, "task", str, line)
    _require(record, "question", str, line)
    if not isinstance(record["id"], str | int) or isinstance(record["id"], bool):
        raise RecordError(line, "id", "must be a string or an integer")
    fields = {key: value for key, value in record.items() if key != "samples"}
    return Problem.from_record(fields)


def parse_samples_record(
    record: Any, line: int, grader: SampleGrader = grade_with_task
) -> ProblemSamples:
    """Validate one decoded input record; raises `RecordError` naming the line and field."""
    if not isinstance(record, dict):
        raise RecordError(line, "<record>", f"must be a JSON object, got {type(record).__name__}")
    problem = _problem(record, line)
    raw_samples = _require(record, "samples", list, line)
    samples = tuple(
        _sample(raw, index, problem, grader, line) for index, raw in enumerate(raw_samples)
    )
    return ProblemSamples(problem, samples)


def parse_samples_line(
    text: str, line: int, grader: SampleGrader = grade_with_task
) -> ProblemSamples:
    """Decode and validate one JSONL line of the composer's input."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecordError(line, "<record>", f"invalid JSON: {error.msg}") from error
    return parse_samples_record(record, line, grader)


def sft_record(
    problem: Problem, trace: Trace, text: str, number: int, variant: str
) -> dict[str, Any]:
    """The SFT chat record of one trace: user = the question, assistant = the trace text."""
    return {
        "id": f"{problem.id}/{number}",
        "messages": [
            {"role": "user", "content": problem.question},
            {"role": "assistant", "content": text},
        ],
        "meta": {
            "problem_id": problem.id,
            "task": problem.task,
            "variant": variant,
            "n_samples": len(trace.pairs),
            "n_correct": trace.n_correct,
            "n_incorrect": trace.n_incorrect,
            "ends_correct": trace.pairs[-1].correct,
            "sample_indices": [pair.sample.index for pair in trace.pairs],
            "prompt_variants": [pair.sample.prompt_variant for pair in trace.pairs],
        },
    }


def dump_record(record: dict[str, Any]) -> str:
    """One JSONL line, byte-stable for equal records (key order as built, UTF-8 kept)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
