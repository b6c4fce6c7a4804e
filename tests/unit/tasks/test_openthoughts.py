"""openthoughts: silver labels from boxed answers, refused rows, the packaged sample, the Hub source."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from skillfactory.tasks import OpenThoughtsTask, UnknownTaskError, get_task, grade
from skillfactory.tasks.dataset_rows import DatasetUnavailableError
from skillfactory.tasks.openthoughts import (
    HF_DATASET,
    MalformedRow,
    boxed_answers,
    problem_from_row,
    silver_label,
)


def row(question: str, assistant: str, **extra: Any) -> dict[str, Any]:
    turns = [{"from": "human", "value": question}, {"from": "gpt", "value": assistant}]
    return {"conversations": turns, "domain": "math", **extra}


THREE_QUARTERS = row(
    "Add one half and one quarter.",
    "<think>\nmaybe \\boxed{1}? no: 2/4 + 1/4\n</think>\n\nSo it is \\boxed{\\frac{3}{4}}.",
)


def test_the_label_is_the_last_boxed_answer_after_think() -> None:
    problem = problem_from_row(THREE_QUARTERS, 4)
    assert problem.answer == "\\frac{3}{4}"  # the \boxed{1} inside <think> does not count
    assert problem.id == "openthoughts-train-4" and problem.task == "openthoughts"
    assert problem.question.startswith("Add one half and one quarter.")
    assert "<answer>" in problem.question
    assert problem.data == {"domain": "math"}


def test_nested_braces_and_a_repeated_label() -> None:
    assert boxed_answers("\\boxed{\\sqrt{2}} and \\boxed {x^{2}} and \\boxed{open") == [
        "\\sqrt{2}",
        "x^{2}",
    ]
    assert silver_label("<think>t</think> \\boxed{7}. Again: \\boxed{ 7 }") == "7"


def test_a_request_for_a_boxed_answer_leaves_the_question() -> None:
    problem = problem_from_row(
        row("What is 6 + 1? Return your final response within \\boxed{}.", "</think>\\boxed{7}"), 0
    )
    assert problem.question.split("\n")[0] == "What is 6 + 1?"


@pytest.mark.parametrize(
    ("answer", "correct"),
    [
        ("\\frac{3}{4}", True),
        ("\\boxed{\\frac{3}{4}}", True),
        ("3/4", True),
        ("0.75", True),
        ("\\frac{4}{3}", False),
        ("1", False),
        ("", False),
        ("x" * 5000, False),
    ],
)
def test_boxed_fractions_are_graded_with_math_verify(answer: str, correct: bool) -> None:
    task = get_task("openthoughts")
    problem = problem_from_row(THREE_QUARTERS, 0)
    assert grade(task, problem, f"Work.\n<answer>{answer}</answer>").correct is correct


@pytest.mark.parametrize(
    ("answer", "correct"), [("12", True), ("\\boxed{12}", True), ("12.", True), ("13", False)]
)
def test_boxed_integers_are_graded_in_process(answer: str, correct: bool) -> None:
    problem = problem_from_row(row("Twelve?", "<think>x</think> \\boxed{12}"), 0)
    assert get_task("openthoughts").check(problem, answer) is correct


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("not a row", "expected a mapping"),
        ({"messages": []}, "no 'conversations' list"),
        ({"conversations": [{"from": "gpt", "value": "</think>\\boxed{1}"}]}, "no turn from human"),
        ({"conversations": [{"from": "human", "value": "Q?"}]}, "no turn from gpt"),
        (row("", "</think>\\boxed{1}"), "the human turn has no text"),
        (row("Q?", "\\boxed{1} and no think tags"), "no closing </think>"),
        (row("Q?", "<think>\\boxed{1}</think> so the answer is one"), "no \\boxed{} answer"),
        (row("Write code.", "<think>t</think>\n```python\nprint(1)\n```"), "no \\boxed{} answer"),
        (row("Q?", "<think>t</think> \\boxed{1} or \\boxed{2}"), "conflicting boxed answers"),
        (row("Q?", "<think>t</think> \\boxed{}"), "no \\boxed{} answer"),
        (row("Q?", "<think>t</think> \\boxed{" + "1" * 2000 + "}"), "longer than 1000"),
    ],
)
def test_malformed_rows_are_refused_saying_why(bad: Any, reason: str) -> None:
    with pytest.raises(MalformedRow) as caught:
        problem_from_row(bad, 17)
    assert str(caught.value).startswith("openthoughts row 17: ")
    assert reason in str(caught.value)


def test_the_packaged_sample_skips_its_code_row_and_is_seeded() -> None:
    task = get_task("openthoughts")
    assert isinstance(task, OpenThoughtsTask) and task.source == "packaged"
    everything = task.problems(100)
    assert len(everything) == 11  # 12 rows, one of them code without a boxed answer
    assert all(p.data["domain"] == "math" for p in everything)
    assert task.problems(5, seed=2) == task.problems(5, seed=2)
    assert task.problems(5, seed=2) != task.problems(5, seed=3)
    for problem in everything:
        assert grade(task, problem, f"<answer>{problem.answer}</answer>").correct, problem


class FakeDataset:
    """Enough of `datasets.Dataset` for the draw: len, and select by indices."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows
        self.selected: list[int] = []

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, indices: list[int]) -> list[Any]:
        self.selected += indices
        return [self.rows[i] for i in indices]


def test_the_hub_source_reads_openthoughts3_through_datasets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = [row(f"What is {i} + 1?", f"<think>t</think> \\boxed{{{i + 1}}}") for i in range(3000)]
    rows[::2] = [row("Code?", "<think>t</think> no box")] * len(rows[::2])
    dataset = FakeDataset(rows)
    calls: list[tuple[str, str]] = []

    def load_dataset(name: str, split: str) -> FakeDataset:
        calls.append((name, split))
        return dataset

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    task = get_task("openthoughts@hf")
    assert isinstance(task, OpenThoughtsTask) and task.source == "hf"
    drawn = task.problems(10, seed=0, split="test")  # the one "train" split serves every split
    assert calls == [(HF_DATASET, "train")]
    assert len(drawn) == 10 and all(int(p.id.rsplit("-", 1)[1]) % 2 == 1 for p in drawn)
    assert len(dataset.selected) == 1024  # rows are decoded a chunk at a time, not all 3000
    assert drawn == task.problems(10, seed=0)


def test_a_source_without_usable_rows_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = FakeDataset([row("Code?", "<think>t</think> no box")] * 3)
    monkeypatch.setitem(
        sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda *a, **k: dataset)
    )
    with pytest.raises(DatasetUnavailableError, match="no usable openthoughts row among 3"):
        OpenThoughtsTask(source="hf").problems(5)


def test_only_dataset_tasks_have_an_hf_twin() -> None:
    assert get_task("math500@hf").source == "hf"  # type: ignore[attr-defined]
    with pytest.raises(UnknownTaskError, match="<name>@hf"):
        get_task("countdown-3@hf")
