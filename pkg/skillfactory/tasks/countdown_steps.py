"""The "Step k: a op b = c" answer format of countdown.

Each step is `expression = result`. The stated result must be the exact value of the expression.
A step's operands are given numbers or results of earlier steps; each given number is used at most
once overall, and each result may be used once for every time a step produced it. Results are
spent before given numbers of the same value, which never loses a valid reading (a given number can
stand in anywhere a result can, not the other way round). The last result is the answer's value.

Besides the value, the evaluation counts what the steps leave unused: given numbers no step read,
and results of earlier steps no later step read (a fractional result always counts: operands are
integers, so no step can read one). Exactly-once grading requires that count to be zero.
"""

from __future__ import annotations

import re
from fractions import Fraction

from skillfactory.tasks.countdown_expression import (
    MAX_ANSWER_CHARS,
    MAX_LITERAL_DIGITS,
    ExpressionError,
    Value,
    evaluate,
)

_STEP_LABEL = re.compile(r"step\s*[0-9]{1,3}\s*:", re.IGNORECASE)
_RESULT = re.compile(
    rf"\s*(-?\s*[0-9]{{1,{MAX_LITERAL_DIGITS}}})(?:\s*/\s*([0-9]{{1,{MAX_LITERAL_DIGITS}}}))?\s*[.;,]?\s*"
)


def is_step_format(answer: str) -> bool:
    """Whether the answer starts with a "Step 1:" style label."""
    return _STEP_LABEL.match(answer.lstrip()) is not None


def split_steps(answer: str) -> list[str]:
    """The text of each step, without its label; text before the first label is an error."""
    if len(answer) > MAX_ANSWER_CHARS:
        raise ExpressionError("answer too long")
    head, *steps = _STEP_LABEL.split(answer)
    if head.strip() or not steps:
        raise ExpressionError("not in step format")
    return steps


def stated_result(text: str) -> Value:
    """The right-hand side of a step: an integer or a simple fraction `p/q`."""
    plain = text.strip()
    if plain.isascii() and plain.isdigit() and len(plain) <= MAX_LITERAL_DIGITS:
        return int(plain)
    match = _RESULT.fullmatch(text)
    if match is None:
        raise ExpressionError(f"bad step result {text.strip()[:20]!r}")
    numerator = int(match.group(1).replace(" ", ""))
    if match.group(2) is None:
        return numerator
    denominator = int(match.group(2))
    if denominator == 0:
        raise ExpressionError("division by zero")
    value = Fraction(numerator, denominator)
    return value.numerator if value.denominator == 1 else value


def evaluate_steps(answer: str, numbers: dict[int, int]) -> tuple[Value, int]:
    """The result of the last step, after checking every step, and how many given numbers and
    earlier results the steps leave unused; raises `ExpressionError`.

    `numbers` maps each given number to how often it is given; it is not modified.
    """
    budget = dict(numbers)
    unreadable = 0
    result: Value = 0
    for number, step in enumerate(split_steps(answer)):
        if number > 0:  # the previous result becomes an operand for the steps after it
            if type(result) is int:
                budget[result] = budget.get(result, 0) + 1
            else:
                unreadable += 1
        expression, equals, rest = step.partition("=")
        if not equals:
            raise ExpressionError("step without '='")
        result = stated_result(rest)
        if evaluate(expression, budget) != result:
            raise ExpressionError(f"wrong step result {result}")
    return result, sum(budget.values()) + unreadable
