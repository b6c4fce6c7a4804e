"""`skillfactory grade`: grade a JSONL file of responses with the task graders.

Each input line is `{"task": NAME, "problem": {...}, "response": TEXT}`; each output line is the
same record with `"answer"` (the extracted answer or null) and `"correct"`. A bad line (invalid
JSON, unknown task, missing fields) is reported on stderr with its line number and written with an
`"error"` string, and grading goes on.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from skillfactory.tasks import Problem, ProblemFieldError, UnknownTaskError, get_task, grade

RECORD_FIELDS = ("task", "problem", "response")


class RecordError(ValueError):
    """A line that cannot be graded; the message says why."""


def parse_record(line: str) -> dict[str, Any]:
    """A JSON object holding every field of `RECORD_FIELDS`, with the right types."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise RecordError(f"invalid JSON: {error.msg}") from None
    if not isinstance(record, dict):
        raise RecordError("a record must be a JSON object")
    for field, kind in zip(RECORD_FIELDS, (str, dict, str), strict=True):
        if field not in record:
            raise RecordError(f"missing field {field!r}")
        if not isinstance(record[field], kind):
            raise RecordError(f"field {field!r} must be a {kind.__name__}")
    return record


def grade_record(record: dict[str, Any]) -> dict[str, Any]:
    """The record with "answer" and "correct" added; raises `RecordError` for an ungradable one."""

    try:
        task = get_task(record["task"])
        problem = Problem.from_record(record["problem"], task=task.name)
        result = grade(task, problem, record["response"])
    except (UnknownTaskError, ProblemFieldError) as error:
        message = f"problem {error}" if isinstance(error, ProblemFieldError) else str(error)
        raise RecordError(message) from None
    return {**record, "answer": result.answer, "correct": result.correct}


def error_record(line: str, message: str) -> dict[str, Any]:
    """What is written for a bad line: the record (or the raw line) with the error."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
    base = record if isinstance(record, dict) else {"raw": line}
    return {**base, "answer": None, "correct": False, "error": message}


def grade_lines(source: IO[str], sink: IO[str]) -> tuple[int, int, int]:
    """Grade every non-blank line of `source` into `sink`; returns (graded, correct, errors)."""
    graded = correct = errors = 0
    for number, raw in enumerate(source, start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            result = grade_record(parse_record(line))
            graded += 1
            correct += result["correct"]
        except RecordError as error:
            errors += 1
            typer.echo(f"line {number}: {error}", err=True)
            result = error_record(line, str(error))
        sink.write(json.dumps(result, ensure_ascii=False) + "\n")
    return graded, correct, errors


def open_stream(stack: ExitStack, path: Path, mode: str) -> IO[str]:
    """An opened file, or stdin/stdout for "-"; exits with code 1 when it cannot be opened."""
    if str(path) == "-":
        return sys.stdin if mode == "r" else sys.stdout
    try:
        return stack.enter_context(path.open(mode, encoding="utf-8"))
    except OSError as error:
        typer.echo(f"error: cannot open {path}: {error.strerror}", err=True)
        raise typer.Exit(1) from None


def grade_command(
    input: Annotated[Path, typer.Option("--input", help="JSONL records to grade ('-': stdin).")],
    output: Annotated[Path, typer.Option("--output", help="JSONL file to write ('-': stdout).")],
) -> None:
    """Grade `{"task", "problem", "response"}` records; adds "answer" and "correct" to each."""
    with ExitStack() as stack:
        source = open_stream(stack, input, "r")
        sink = open_stream(stack, output, "w")
        graded, correct, errors = grade_lines(source, sink)
    typer.echo(f"graded {graded}, correct {correct}, errors {errors}", err=True)


def register(app: typer.Typer) -> None:
    """Add the `grade` command."""
    app.command("grade")(grade_command)
