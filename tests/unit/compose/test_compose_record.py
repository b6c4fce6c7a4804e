"""Reading the composer's input records: validation errors name the line and field; grading."""

from __future__ import annotations

import json
from typing import Any

import pytest

from skillfactory.compose import RecordError, parse_samples_line, parse_samples_record
from skillfactory.tasks.base import Problem


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "m1",
        "task": "multiplication-2",
        "question": "What is 12 * 34?",
        "answer": "408",
        "samples": [
            {
                "text": "12*34 = 408 <answer>408</answer>",
                "prompt_variant": "restate",
                "correct": True,
                "reflections": [{"text": "ok <verdict>Correct</verdict>"}],
            }
        ],
    }
    base.update(changes)
    return base


def never_called(problem: Problem, text: str) -> bool:
    raise AssertionError("graded although `correct` was given")


def test_a_good_record_becomes_problem_and_samples() -> None:
    item = parse_samples_record(record(digits=2), 1, never_called)
    assert item.problem == Problem(
        "m1", "multiplication-2", "What is 12 * 34?", "408", {"digits": 2}
    )
    (sample,) = item.samples
    assert (sample.index, sample.prompt_variant, sample.correct) == (0, "restate", True)
    assert sample.reflections[0].verdict is True


def test_missing_correct_is_graded_with_the_given_grader() -> None:
    samples = [{"text": "<answer>408</answer>"}, {"text": "<answer>407</answer>"}]
    graded: list[str] = []

    def grader(problem: Problem, text: str) -> bool:
        graded.append(text)
        return "408" in text

    item = parse_samples_record(record(samples=samples), 1, grader)
    assert [s.correct for s in item.samples] == [True, False]
    assert len(graded) == 2
    assert item.samples[0].reflections == () and item.samples[0].prompt_variant == "unknown"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"samples": None}, "samples"),
        ({"question": 3}, "question"),
        ({"samples": [{"prompt_variant": "x"}]}, "samples[0].text"),
        ({"samples": [{"text": "a", "correct": "yes"}]}, "samples[0].correct"),
        (
            {"samples": [{"text": "a", "correct": True, "reflections": [{}]}]},
            "samples[0].reflections[0].text",
        ),  # fmt: skip
        ({"samples": ["text"]}, "samples[0]"),
        ({"id": [1]}, "id"),
    ],
)
def test_bad_fields_are_named(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError) as error:
        parse_samples_record(record(**changes), 7, never_called)
    assert error.value.line == 7
    assert error.value.field == field
    assert str(error.value).startswith(f"line 7: field {field!r}")


def test_missing_keys_and_bad_json_are_named() -> None:
    bad = record()
    del bad["answer"]
    with pytest.raises(RecordError, match="line 3: field 'answer': missing"):
        parse_samples_line(json.dumps(bad), 3, never_called)
    with pytest.raises(RecordError, match="line 4: .*invalid JSON"):
        parse_samples_line("{not json", 4, never_called)
    with pytest.raises(RecordError, match="must be a JSON object"):
        parse_samples_line("[1, 2]", 5, never_called)


def test_grading_with_the_task_registry() -> None:
    tasks = pytest.importorskip("skillfactory.tasks")
    if not hasattr(tasks, "get_task"):
        pytest.skip("task registry not available yet")
    samples = [{"text": "<answer>408</answer>"}, {"text": "<answer>407</answer>"}]
    item = parse_samples_line(json.dumps(record(a=12, b=34, samples=samples)), 1)
    assert [s.correct for s in item.samples] == [True, False]
    with pytest.raises(RecordError, match="line 2: field 'task'"):
        parse_samples_line(json.dumps(record(task="no-such-task", samples=samples)), 2)
    with pytest.raises(RecordError, match="line 3: field 'a': missing"):
        parse_samples_line(json.dumps(record(samples=samples)), 3)
