"""Every task: the registry, generator → grader round trips, perturbed answers, seeded determinism."""

from __future__ import annotations

import dataclasses

import pytest

from skillfactory.tasks import TASK_NAMES, Problem, UnknownTaskError, get_task, grade

DATASETS = ("gsm8k", "csqa", "math500", "openthoughts")
GENERATED = [name for name in TASK_NAMES if name not in DATASETS]
EXPECTED_NAMES = {
    *(f"countdown-{n}" for n in (3, 4, 5, 6)),
    *(f"countdown-subset-{n}" for n in (3, 4, 5, 6)),
    *(f"multiplication-{d}" for d in (1, 2, 3, 4, 5)),
    "letter-countdown-4",
    "letter-countdown-5",
    "acronym-4",
    "acronym-5",
    "gsm8k",
    "csqa",
    "math500",
    "openthoughts",
}


def test_task_names_are_complete() -> None:
    assert set(TASK_NAMES) == EXPECTED_NAMES
    assert len(TASK_NAMES) == len(EXPECTED_NAMES)


def test_unknown_task_lists_the_known_names() -> None:
    with pytest.raises(UnknownTaskError) as caught:
        get_task("countdown-9")
    assert isinstance(caught.value, ValueError)
    assert "countdown-4" in str(caught.value) and "math500" in str(caught.value)


def test_get_task_returns_a_task_of_that_name() -> None:
    for name in TASK_NAMES:
        assert get_task(name).name == name


def wrong_answers(problem: Problem) -> list[str]:
    """Answers that must be graded wrong for this problem."""
    family = problem.task.rsplit("-", 1)[0] if problem.task[-1].isdigit() else problem.task
    answer = problem.answer
    if family in ("countdown", "countdown-subset"):
        return [f"{answer} + 1000", f"({answer}) * 2", "1 + 1", answer.replace(" ", "", 1) + "0"]
    if family == "multiplication":
        return [str(int(answer) + 1), str(int(answer) * 10), f"{answer}.5", f"{answer} apples"]
    if family in ("letter-countdown", "acronym"):
        return [answer[:-1], answer + "s", "zzzz", answer.upper() + "!", ""]
    if family == "gsm8k":
        return [str(float(answer) + 1), "no idea", f"{answer}0"]
    if family == "csqa":
        others = [label for label in problem.data["choices"]["label"] if label != answer]
        return [*others, "F", "none of these"]
    if family in ("math500", "openthoughts"):
        return ["\\boxed{123456789}", "x^{99}+17", "garbage"]
    raise AssertionError(problem.task)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_reference_answers_are_correct_and_perturbed_ones_wrong(name: str) -> None:
    task = get_task(name)
    problems = task.problems(8, seed=3)
    assert len(problems) == 8
    for problem in problems:
        assert problem.task == name
        assert "<answer>" in problem.question
        result = grade(task, problem, f"Some reasoning.\n<answer>{problem.answer}</answer>")
        assert result.correct, (problem, result)
        assert result.answer == problem.answer.strip()
        for wrong in wrong_answers(problem):
            if wrong.strip() == problem.answer:
                continue
            assert not grade(task, problem, f"<answer>{wrong}</answer>").correct, (problem, wrong)
        assert not grade(task, problem, "no answer tags at all").correct
        assert grade(task, problem, "").answer is None


@pytest.mark.parametrize("name", TASK_NAMES)
def test_problems_are_seeded_and_deterministic(name: str) -> None:
    task = get_task(name)
    first = task.problems(6, seed=11)
    again = task.problems(6, seed=11)
    other = task.problems(6, seed=12)
    assert first == again
    assert [p.id for p in first] != [p.id for p in other]
    assert len({p.id for p in first}) == 6


@pytest.mark.parametrize("name", GENERATED)
def test_generated_problems_are_a_stable_stream_and_splits_differ(name: str) -> None:
    task = get_task(name)
    assert task.problems(3, seed=5) == task.problems(10, seed=5)[:3]
    assert task.problems(5, seed=5, split="train") != task.problems(5, seed=5, split="test")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_records_round_trip_and_still_grade(name: str) -> None:
    task = get_task(name)
    for problem in task.problems(3, seed=1):
        record = problem.to_record()
        again = Problem.from_record(record)
        assert again == problem
        assert task.check(again, problem.answer)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_malformed_answers_are_wrong_never_errors(name: str) -> None:
    task = get_task(name)
    problem = task.problems(1)[0]
    for junk in ["", " ", "\x00", "<answer>", "é" * 5000, "1" * 10_000, "{}", "\\boxed{", "None"]:
        assert task.check(problem, junk) is False


def test_changed_problem_data_changes_the_verdict() -> None:
    task = get_task("countdown-4")
    problem = task.problems(1)[0]
    moved = dataclasses.replace(
        problem, data={**problem.data, "target": problem.data["target"] + 1}
    )
    assert not task.check(moved, problem.answer)
    mult = get_task("multiplication-3")
    item = mult.problems(1)[0]
    assert not mult.check(
        dataclasses.replace(item, data={**item.data, "a": item.data["a"] + 1}), item.answer
    )
