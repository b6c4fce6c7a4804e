"""multiplication-D: the exact product of two D-digit numbers (D = 1 is a warm-up for tiny models).

The answer must be the integer alone; commas and spaces between digit groups ("1,234", "1 234")
are tolerated, anything else (units, words, decimals, an equation) is wrong.
"""

from __future__ import annotations

import random
import re

from skillfactory.tasks.base import Problem, ProblemFieldError

DIGITS = (1, 2, 3, 4, 5)
_INTEGER = re.compile(r"-?[0-9]{1,40}")
_SEPARATORS = str.maketrans("", "", ", \u00a0\u202f")


def question_text(left: int, right: int) -> str:
    """The prompt of a multiplication problem."""
    return (
        f"What is {left} * {right}? Work it out, then give the exact product as a whole number "
        "inside <answer> </answer> tags: the digits alone, nothing else."
    )


def parse_integer(answer: str) -> int | None:
    """The integer an answer states, ignoring commas and spaces; None for anything else."""
    digits = answer.strip().translate(_SEPARATORS)
    return int(digits) if _INTEGER.fullmatch(digits) else None


def read_factors(problem: Problem) -> tuple[int, int]:
    """The two factors of a problem; `ProblemFieldError` when missing."""
    factors = []
    for key in ("a", "b"):
        value = problem.data.get(key)
        if type(value) is not int:
            raise ProblemFieldError(key)
        factors.append(value)
    return factors[0], factors[1]


class MultiplicationTask:
    """multiplication-D: a × b with a and b drawn uniformly from the D-digit numbers."""

    def __init__(self, digits: int) -> None:
        if digits not in DIGITS:
            raise ValueError(f"multiplication digits must be one of {DIGITS}, not {digits}")
        self.digits = digits
        self.name = f"multiplication-{digits}"

    def problems(self, n: int, seed: int = 0, split: str = "train") -> list[Problem]:
        """`n` problems; problem i depends only on (name, split, seed, i)."""
        return [self.problem(i, seed, split) for i in range(n)]

    def problem(self, index: int, seed: int = 0, split: str = "train") -> Problem:
        """The `index`-th problem of a seeded stream."""
        rng = random.Random(f"{self.name}/{split}/{seed}/{index}")
        low, high = 10 ** (self.digits - 1), 10**self.digits - 1
        left, right = rng.randint(low, high), rng.randint(low, high)
        return Problem(
            f"{self.name}-{split}-{seed}-{index}",
            self.name,
            question_text(left, right),
            str(left * right),
            {"a": left, "b": right},
        )

    def check(self, problem: Problem, answer: str) -> bool:
        """Whether the answer is exactly a × b."""
        left, right = read_factors(problem)
        return parse_integer(answer) == left * right
