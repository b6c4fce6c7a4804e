"""The countdown grader: exact arithmetic, the step format, exactly-once by default and
at-most-once as `countdown-subset-N`, and hostile answers graded wrong fast."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skillfactory.tasks import CountdownTask, Problem, get_task, grade
from skillfactory.tasks.countdown_expression import ExpressionError, evaluate

TASK = CountdownTask(4)
SUBSET = CountdownTask(4, "at-most-once")


def problem(numbers: list[int], target: int) -> Problem:
    return Problem("t", "countdown-4", "q", "", {"numbers": numbers, "target": target})


P = problem([25, 5, 4, 3], 83)
"""(25 - 5) * 4 + 3 = 83."""


@pytest.mark.parametrize(
    "answer",
    [
        "(25 - 5) * 4 + 3",
        "(25-5)*4+3",
        "3 + 4 * (25 - 5)",
        "(25 − 5) × 4 + 3",
        "((25 - 5) * 4) + 3",
        "(25 - 5) * 4 + 3 = 83",
        "  (25 - 5)\n * 4 + 3 ",
        "4 * (25 - 5) + 3",
        "-(5 - 25) * 4 + 3",
    ],
)
def test_correct_expressions_are_accepted(answer: str) -> None:
    assert TASK.check(P, answer)


@pytest.mark.parametrize(
    "answer",
    [
        "(25 - 5) * 4",  # 80
        "(25 - 5) * 4 + 3 = 84",  # wrong stated target
        "(25 - 5) * 4 + 3 = 80 + 3",  # '=' followed by more than the target
        "(25 - 5) * 4 + 3 + 0",  # 0 not given
        "(25 - 5) * 4 + 3 - 3 + 3",  # 3 used three times
        "(25 - 5) * 4 + 3 3",  # trailing literal
    ],
)
def test_wrong_expressions_are_rejected(answer: str) -> None:
    assert not TASK.check(P, answer)


def test_exact_rational_arithmetic() -> None:
    # 8 / 3 * 3 is exactly 8, and float rounding must not matter
    assert TASK.check(problem([8, 3, 3, 1], 8), "8 / 3 * 3 * 1")
    assert TASK.check(problem([1, 3, 3, 10], 10), "(1 / 3 + 1 / 3 * 2) * 10") is False  # 1 reused
    assert TASK.check(problem([1, 3, 2, 10], 10), "(1 / 3 + 2 / 3) * 10") is False  # 3 reused
    assert TASK.check(problem([1, 3, 3, 2, 10], 10), "(1 / 3 + 2 / 3) * 10")
    assert evaluate("7 / 2", {7: 1, 2: 1}) == Fraction(7, 2)
    assert type(evaluate("8 / 2", {8: 1, 2: 1})) is int


def test_repeated_numbers_may_be_used_as_often_as_given() -> None:
    assert TASK.check(problem([9, 9, 26, 3], 44), "9 * 3 + 26 - 9")
    assert not TASK.check(problem([9, 8, 26, 3], 44), "9 * 3 + 26 - 9")


STEPS_OK = [
    ("Step 1: 25 - 5 = 20\nStep 2: 20 * 4 = 80\nStep 3: 80 + 3 = 83", P),
    ("step 1: 25 - 5 = 20; Step 2: 20 * 4 = 80 Step 3: 80 + 3 = 83.", P),
    ("Step 1: 25 − 5 = 20\nStep 2: 20 × 4 = 80\nStep 3: 3 + 80 = 83", P),
    ("Step 1: 5 + 3 = 8\nStep 2: 8 * 3 = 24", problem([5, 3, 3], 24)),
    # a result with the value of a given number: both the 8 given and the 8 made are used
    ("Step 1: 5 + 3 = 8\nStep 2: 8 * 8 = 64", problem([8, 5, 3], 64)),
    # a step may hold a whole expression, with fractions inside it
    ("Step 1: 4 * (7 / 2) = 14", problem([7, 2, 4], 14)),
    # a result stated as a fraction that is a whole number can be used later
    ("Step 1: 7 * 4 = 56/2\nStep 2: 28 + 2 = 30", problem([7, 4, 2], 30)),
]


@pytest.mark.parametrize(("answer", "case"), STEPS_OK)
def test_step_format_is_accepted(answer: str, case: Problem) -> None:
    assert TASK.check(case, answer)


STEPS_WRONG = [
    "Step 1: 25 - 5 = 21\nStep 2: 21 * 4 = 84\nStep 3: 84 - 1 = 83",  # wrong step result
    "Step 1: 25 - 5 = 20\nStep 2: 20 * 4 = 80",  # last result is not the target
    "Step 1: 25 - 5 = 20\nStep 2: 20 * 4 = 80\nStep 3: 80 + 3",  # step without a result
    "Step 1: 25 - 5 = 20\nStep 2: 20 * 4 = 80\nStep 3: 80 + 3 = 83 = 83",  # two '='
    "Step 1: 25 - 5 = 20\nStep 2: 20 * 4 = 80\nStep 3: 80 + 3 = eighty-three",
    "Step 1: 20 * 4 = 80\nStep 2: 80 + 3 = 83",  # 20 is neither given nor made
    "Step 1: 25 - 5 = 20\nStep 2: 20 * 4 = 80\nStep 3: 80 + 3 = 83\nStep 4: 25 * 0 = 0",
    "Step 1: 25 - 5 = 20\nStep 2: 20 + 20 = 40\nStep 3: 40 * 2 + 3 = 83",  # 20 made once, used twice
    "Step 1: 25 - 5 = 20\nStep 2: 20 * 4 = 80\nStep 3: 80 + 3 = 83\nStep 4: 83 / 0 = 83",
    "First, Step 1: 25 - 5 = 20\nStep 2: 20 * 4 = 80\nStep 3: 80 + 3 = 83",  # text before steps
    "Step 1: 5 / 4 = 5/4\nStep 2: 25 * 5 / 4 = 125/4\nStep 3: 3 = 83",
    "Step 1: 25 ** 1 = 25\nStep 2: 25 - 5 = 20\nStep 3: 20 * 4 + 3 = 83",
]


@pytest.mark.parametrize("answer", STEPS_WRONG)
def test_wrong_steps_are_rejected(answer: str) -> None:
    assert not TASK.check(P, answer)
    assert not SUBSET.check(P, answer)


LEAVES_SOMETHING_UNUSED = [
    ("(25 - 5) * 4", problem([25, 5, 4, 3], 80)),  # 3 unused
    ("(25 - 5) * 4 = 80", problem([25, 5, 4, 3], 80)),
    ("4 * 20", problem([20, 4, 4], 80)),  # one of the two 4s unused
    ("Step 1: 25 - 5 = 20\nStep 2: 20 * 4 = 80", problem([25, 5, 4, 3], 80)),  # 3 unused
    ("Step 1: 5 + 3 = 8\nStep 2: 8 * 3 = 24", problem([5, 3, 3, 7], 24)),  # 7 unused
    # every given number is read, but step 1's result never reaches the answer
    ("Step 1: 3 - 2 = 1\nStep 2: 25 - 5 = 20\nStep 3: 20 * 4 = 80", problem([25, 5, 4, 3, 2], 80)),
    # a fractional result no later step can read (operands are integers)
    ("Step 1: 7 / 2 = 7/2\nStep 2: 4 * (7 / 2) = 14", problem([7, 2, 4, 7, 2], 14)),
]


@pytest.mark.parametrize(("answer", "case"), LEAVES_SOMETHING_UNUSED)
def test_leaving_a_number_unused_is_wrong_by_default_and_right_at_most_once(
    answer: str, case: Problem
) -> None:
    assert not TASK.check(case, answer)
    assert SUBSET.check(case, answer)


def test_at_most_once_still_rejects_reuse_and_wrong_values() -> None:
    assert not SUBSET.check(P, "(25 - 5) * 4 + 3 - 3 + 3")  # 3 used three times
    assert not SUBSET.check(P, "(25 - 5) * 4")  # 80, not 83
    assert not SUBSET.check(P, "(25 - 5) * 4 + 3 + 0")  # 0 not given
    assert SUBSET.check(P, "(25 - 5) * 4 + 3")


def test_the_two_rules_are_two_task_names_over_the_same_problems() -> None:
    exact, subset = get_task("countdown-4"), get_task("countdown-subset-4")
    assert (exact.name, subset.name) == ("countdown-4", "countdown-subset-4")
    for left, right in zip(exact.problems(20, seed=2), subset.problems(20, seed=2), strict=True):
        assert left.data == right.data and left.answer == right.answer
        assert (left.task, right.task) == ("countdown-4", "countdown-subset-4")
        assert "exactly once" in left.question and "at most once" in right.question
        numbers = left.data["numbers"]
        unused_one = f"<answer>{' + '.join(str(n) for n in numbers[:-1])}</answer>"
        target_of_prefix = sum(numbers[:-1])
        moved = Problem(left.id, left.task, "q", "", {**left.data, "target": target_of_prefix})
        assert not grade(exact, moved, unused_one).correct
        assert grade(subset, moved, unused_one).correct


HOSTILE = [
    "__import__('os').system('touch /tmp/pwned')",
    "exec('import os')",
    "eval('25-5')",
    "lambda: 83",
    "(lambda x: x)(83)",
    "[83][0]",
    "globals()",
    "25 ** 1 * 4 - 17",
    "9**9**9",
    "9**9**9**9**9**9**9**9",
    "2^2",
    "25 ^ 5",
    "3" * 1_000_000,
    "(" * 10_000 + "3" + ")" * 10_000,
    "(" * 400 + "3" + ")" * 400,
    "-" * 900 + "3",
    "1" + "+1" * 100_000,
    "٣ + ٤",
    "２５ - ５",
    "²5 - 5",
    "25 / 0",
    "(25 - 5) * 4 + 3 / (5 - 5)",
    "99999999999999999999999999 - 99999999999999999999999916",
    "10" * 50,
    "83",
    "100 - 17",
    "3 + 3 + 3",
    "",
    "   \n\t  ",
    "1e100",
    "8.3e1",
    "0x53",
    "0b1010011",
    "25.0 * 4 - 17",
    "True + 82",
    "abs(-83)",
    "(25 - 5) * 4 + 3 # comment",
    "(25 - 5) * 4 + 3;",
    "((25 - 5) * 4 + 3",
    "(25 - 5)) * 4 + 3",
    "25 5 4 3",
    "+",
    "()",
    "(25 - 5) * 4 + 3 = 83 = 83",
    "25 % 5",
    "25 // 5",
    "\x00(25 - 5) * 4 + 3",
    "(25 - 5) * 4 + 3 if True else 0",
]


@pytest.mark.parametrize("answer", HOSTILE, ids=[f"hostile-{i}" for i in range(len(HOSTILE))])
def test_hostile_answers_are_wrong_and_fast(answer: str) -> None:
    start = time.perf_counter()
    result = grade(TASK, P, f"<answer>{answer}</answer>")
    elapsed = time.perf_counter() - start
    assert result.correct is False
    assert elapsed < 0.05, f"took {elapsed * 1000:.1f} ms"


def test_there_are_at_least_thirty_hostile_answers() -> None:
    assert len(HOSTILE) >= 30


def test_hostile_check_without_answer_tags_is_fast_too() -> None:
    for answer in HOSTILE:
        start = time.perf_counter()
        assert TASK.check(P, answer) is False
        assert time.perf_counter() - start < 0.05


def test_parser_rejects_with_expression_error() -> None:
    with pytest.raises(ExpressionError):
        evaluate("2 ** 3", {2: 1, 3: 1})
    with pytest.raises(ExpressionError):
        evaluate("1 / 0", {1: 1, 0: 1})


@pytest.mark.parametrize(
    "name", [f"countdown{rule}-{n}" for rule in ("", "-subset") for n in (3, 4, 5, 6)]
)
def test_generator_emits_only_solvable_problems(name: str) -> None:
    task = get_task(name)
    size = int(name.rsplit("-", 1)[1])
    for item in task.problems(200, seed=7):
        numbers, target = item.data["numbers"], item.data["target"]
        assert len(numbers) == size and all(1 <= n <= 100 for n in numbers)
        assert 10 <= target <= 999
        assert str(target) in item.question and all(str(n) in item.question for n in numbers)
        assert grade(task, item, f"<answer>{item.answer}</answer>").correct, item


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_graded_without_error_and_fast(text: str) -> None:
    start = time.perf_counter()
    assert TASK.check(P, text) in (True, False)
    assert time.perf_counter() - start < 0.05


def tree(numbers: list[int]) -> st.SearchStrategy[tuple[str, Fraction]]:
    """A random expression over a prefix of `numbers` with its exact value, built without eval."""
    leaves = st.sampled_from(numbers).map(lambda n: (str(n), Fraction(n)))

    def extend(
        children: st.SearchStrategy[tuple[str, Fraction]],
    ) -> st.SearchStrategy[tuple[str, Fraction]]:
        return st.tuples(children, st.sampled_from("+-*"), children).map(
            lambda t: (
                f"({t[0][0]} {t[1]} {t[2][0]})",
                t[0][1] + t[2][1]
                if t[1] == "+"
                else t[0][1] - t[2][1]
                if t[1] == "-"
                else t[0][1] * t[2][1],
            )
        )

    return st.recursive(leaves, extend, max_leaves=4)


@settings(max_examples=200, deadline=None)
@given(tree([2, 3, 5, 7, 11]))
def test_parser_agrees_with_exact_arithmetic(expression: tuple[str, Fraction]) -> None:
    text, value = expression
    budget = dict.fromkeys([2, 3, 5, 7, 11], 99)
    assert evaluate(text, budget) == value
