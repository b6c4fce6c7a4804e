"""countdown-N: reach a target from N given numbers with + − × ÷ and parentheses.

The generator builds a random expression over all N numbers whose intermediate values are positive
integers, so every problem it emits is solvable, and that expression is the reference answer. The
grader reads a plain expression (optionally followed by "= target") or the "Step k: a op b = c"
format, with the safe parser of `countdown_expression`.

Two rules for the given numbers, one task name each:

- `countdown-N` (the default): every given number is used exactly once, as the public countdown
  scorers of the paper's lineage grade it (TinyZero's; the cognitive-behaviours study). In the
  step format every intermediate result must also be used by a later step, so that every number
  reaches the final answer.
- `countdown-subset-N`: each given number is used at most once, so any subset will do (lenient).

Both rules draw the same numbers and targets for the same seed, split and index; the question
states the rule, and the problem's `task` names the rule it is graded by.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from skillfactory.tasks.base import Problem, ProblemFieldError
from skillfactory.tasks.countdown_expression import (
    MAX_LITERAL_DIGITS,
    ExpressionError,
    Value,
    evaluate_tokens,
    tokenize,
)
from skillfactory.tasks.countdown_steps import evaluate_steps, is_step_format

SIZES = (3, 4, 5, 6)
MIN_NUMBER, MAX_NUMBER = 1, 100
MIN_TARGET, MAX_TARGET = 10, 999

NumberUse = Literal["exactly-once", "at-most-once"]
"""How often each given number is used: `countdown-N` requires exactly once, `countdown-subset-N`
allows at most once."""

SUBSET_FAMILY = "countdown-subset"
"""The family of the at-most-once tasks: `countdown-subset-N`."""

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


@dataclass(frozen=True)
class _Node:
    """A reference expression under construction: its text, value and top operator's precedence."""

    text: str
    value: int
    precedence: int = 3


def combine(left: _Node, operator: str, right: _Node) -> _Node | None:
    """`left operator right` when its value is a positive integer, else None; minimal parentheses."""
    value = apply_integer(left.value, operator, right.value)
    if value is None or value <= 0:
        return None
    precedence = _PRECEDENCE[operator]
    left_text = f"({left.text})" if left.precedence < precedence else left.text
    tight = right.precedence < precedence or (right.precedence == precedence and operator in "-/")
    right_text = f"({right.text})" if tight else right.text
    return _Node(f"{left_text} {operator} {right_text}", value, precedence)


def apply_integer(left: int, operator: str, right: int) -> int | None:
    """An integer operation, or None when a division is inexact."""
    if operator == "+":
        return left + right
    if operator == "-":
        return left - right
    if operator == "*":
        return left * right
    quotient, remainder = divmod(left, right)
    return quotient if remainder == 0 else None


def combine_either_way(left: _Node, operator: str, right: _Node) -> _Node | None:
    """`combine` with the larger operand first for - and /, so they more often give integers."""
    if operator in "-/" and left.value < right.value:
        left, right = right, left
    return combine(left, operator, right)


def random_solution(numbers: list[int], rng: random.Random) -> _Node | None:
    """Combine all numbers in a random order with random operators; None on a dead end."""
    pool = [_Node(str(n), n) for n in numbers]
    while len(pool) > 1:
        rng.shuffle(pool)
        left, right = pool.pop(), pool.pop()
        operators = list(_PRECEDENCE)
        rng.shuffle(operators)
        node = next((n for op in operators if (n := combine_either_way(left, op, right))), None)
        if node is None:
            return None
        pool.append(node)
    return pool[0]


_RULE_TEXT: dict[NumberUse, str] = {
    "exactly-once": "each number must be used exactly once",
    "at-most-once": "each number may be used at most once",
}


def question_text(numbers: list[int], target: int, number_use: NumberUse = "exactly-once") -> str:
    """The prompt of a countdown problem, stating the rule it is graded by."""
    listed = ", ".join(str(n) for n in numbers)
    return (
        f"Using the numbers {listed}, write an arithmetic expression that equals {target}. "
        f"You may use +, -, * and / and parentheses; {_RULE_TEXT[number_use]}. "
        "Give your final expression inside <answer> </answer> tags, "
        "for example <answer>(1 + 2) * 3</answer>."
    )


def read_numbers(problem: Problem) -> tuple[dict[int, int], int]:
    """The given numbers as value → count, and the target; `ProblemFieldError` when malformed."""
    numbers, target = problem.data.get("numbers"), problem.data.get("target")
    if not isinstance(numbers, list):
        raise ProblemFieldError("numbers")
    if type(target) is not int:
        raise ProblemFieldError("target")
    counts: dict[int, int] = {}
    for number in numbers:
        if type(number) is not int:
            raise ProblemFieldError("numbers")
        counts[number] = counts.get(number, 0) + 1
    return counts, target


def evaluate_answer(answer: str, numbers: dict[int, int], target: int) -> tuple[Value, int]:
    """The value of a plain expression (with optional "= target") or of a step-format answer, and
    how many given numbers (and, in the step format, intermediate results) it leaves unused.

    `numbers` maps each given number to how often it is given; it is not modified. Raises
    `ExpressionError` when the answer is not a valid expression over the numbers."""
    if is_step_format(answer):
        return evaluate_steps(answer, numbers)
    tokens = tokenize(answer)
    if "=" in tokens:
        tokens = strip_target_suffix(tokens, target)
    budget = dict(numbers)
    value = evaluate_tokens(tokens, budget)
    return value, sum(budget.values())


def strip_target_suffix(tokens: list[str], target: int) -> list[str]:
    """The tokens before a final "= target"; any other use of "=" is an error."""
    equals = tokens.index("=")
    rest = tokens[equals + 1 :]
    if len(rest) != 1 or not "0" <= rest[0][0] <= "9" or len(rest[0]) > MAX_LITERAL_DIGITS:
        raise ExpressionError("'=' must be followed by the target")
    if int(rest[0]) != target:
        raise ExpressionError("stated value is not the target")
    return tokens[:equals]


def task_name(size: int, number_use: NumberUse) -> str:
    """`countdown-N` for exactly-once, `countdown-subset-N` for at-most-once."""
    return f"countdown-{size}" if number_use == "exactly-once" else f"{SUBSET_FAMILY}-{size}"


class CountdownTask:
    """countdown-N: N numbers in 1..100, a target in 10..999 reachable with all of them; every
    number used exactly once (`countdown-N`) or at most once (`countdown-subset-N`)."""

    def __init__(self, size: int, number_use: NumberUse = "exactly-once") -> None:
        if size not in SIZES:
            raise ValueError(f"countdown size must be one of {SIZES}, not {size}")
        self.size = size
        self.number_use: NumberUse = number_use
        self.name = task_name(size, number_use)
        self.stream = f"countdown-{size}"  # seeds the generator: both rules draw the same problems

    def problems(self, n: int, seed: int = 0, split: str = "train") -> list[Problem]:
        """`n` solvable problems; problem i's numbers and target depend only on (N, split, seed, i),
        its question and id also on the task's name."""
        return [self.problem(i, seed, split) for i in range(n)]

    def problem(self, index: int, seed: int = 0, split: str = "train") -> Problem:
        """The `index`-th problem of a seeded stream."""
        rng = random.Random(f"{self.stream}/{split}/{seed}/{index}")
        while True:
            numbers = [rng.randint(MIN_NUMBER, MAX_NUMBER) for _ in range(self.size)]
            solution = random_solution(numbers, rng)
            if solution is not None and MIN_TARGET <= solution.value <= MAX_TARGET:
                break
        data: dict[str, Any] = {"numbers": numbers, "target": solution.value}
        question = question_text(numbers, solution.value, self.number_use)
        problem_id = f"{self.name}-{split}-{seed}-{index}"
        return Problem(problem_id, self.name, question, solution.text, data)

    def check(self, problem: Problem, answer: str) -> bool:
        """Whether the answer's exact value is the target, with every given number used exactly
        once (each at most once for `countdown-subset-N`)."""
        numbers, target = read_numbers(problem)
        try:
            value, unused = evaluate_answer(answer, numbers, target)
        except (ExpressionError, RecursionError, ValueError, ZeroDivisionError):
            return False
        return value == target and (unused == 0 or self.number_use == "at-most-once")
