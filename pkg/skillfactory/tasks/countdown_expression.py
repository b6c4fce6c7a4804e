"""A safe, exact evaluator for countdown answers: integers, + - * / (or × ÷ −), unary minus, ( ).

Model text is never handed to `eval`. A small tokenizer and an operator-precedence evaluator compute the
expression with Python ints, switching to `Fraction` only when a division is inexact. Every literal
must be taken from a *budget* of allowed numbers (value → how many times it may still be used), so
a number that is not given, or is used too often, fails as soon as it is read — which also keeps
every value small. Input length, literal size and nesting depth are capped, so evaluation is
bounded in time on any text. Anything else (exponentiation, names, decimals, unicode digits) is an
`ExpressionError`.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_ANSWER_CHARS = 1000
"""Longer answers are wrong without being read."""

MAX_LITERAL_DIGITS = 9
"""Longer digit strings are "huge literals" and wrong."""

MAX_NESTING = 64
"""Deepest allowed nesting of parentheses and unary minus signs."""

Value = int | Fraction

_TOKENS = re.compile(r"[0-9]+|\S")
_ASCII_OPERATORS = str.maketrans({"×": "*", "÷": "/", "−": "-"})


class ExpressionError(ValueError):
    """The text is not an allowed countdown expression over the given numbers."""


def tokenize(text: str) -> list[str]:
    """ASCII digit runs and single non-space characters; × ÷ − are mapped to * / -."""
    if len(text) > MAX_ANSWER_CHARS:
        raise ExpressionError("answer too long")
    return _TOKENS.findall(text if text.isascii() else text.translate(_ASCII_OPERATORS))


def evaluate_tokens(tokens: list[str], budget: dict[int, int]) -> Value:
    """The exact value of a whole token list; literals are taken from (and decrement) `budget`.

    Operator precedence evaluation with explicit stacks (no recursion, so no depth limit to hit):
    binary + - * / are left-associative, unary minus binds tightest, "(" opens a group.
    """
    values: list[Value] = []
    operators: list[str] = []
    expect_operand = True
    open_groups = 0
    for token in tokens:
        if expect_operand:
            if "0" <= token[0] <= "9":
                values.append(take_literal(token, budget))
                expect_operand = False
            elif token == "(" or token == "-":
                open_groups += 1
                if open_groups > MAX_NESTING:
                    raise ExpressionError("nested too deeply")
                operators.append("(" if token == "(" else "neg")
            else:
                raise ExpressionError(f"unexpected {token!r}")
        elif token in _BINARY:
            precedence = _BINARY[token]
            while operators and _PRECEDENCE[operators[-1]] >= precedence:
                open_groups -= apply(operators.pop(), values)
            operators.append(token)
            expect_operand = True
        elif token == ")":
            while operators and operators[-1] != "(":
                open_groups -= apply(operators.pop(), values)
            if not operators:
                raise ExpressionError("unbalanced parentheses")
            operators.pop()
            open_groups -= 1
        else:
            raise ExpressionError(f"unexpected {token!r}")
    if expect_operand:
        raise ExpressionError("expression ends too early")
    while operators:
        if operators[-1] == "(":
            raise ExpressionError("unbalanced parentheses")
        apply(operators.pop(), values)
    return values[0]


_BINARY = {"+": 1, "-": 1, "*": 2, "/": 2}
_PRECEDENCE = {**_BINARY, "neg": 3, "(": 0}


def apply(operator: str, values: list[Value]) -> int:
    """Apply an operator to the top of the value stack; returns 1 for unary minus (which counts
    toward nesting) and 0 for binary operators."""
    if operator == "neg":
        values[-1] = -values[-1]
        return 1
    right = values.pop()
    left = values[-1]
    if operator == "+":
        values[-1] = left + right
    elif operator == "-":
        values[-1] = left - right
    elif operator == "*":
        values[-1] = left * right
    else:
        values[-1] = divide(left, right)
    return 0


def take_literal(token: str, budget: dict[int, int]) -> int:
    """The value of a digit token, spent from `budget`; huge or unavailable numbers are errors."""
    if len(token) > MAX_LITERAL_DIGITS:
        raise ExpressionError("literal too large")
    number = int(token)
    left = budget.get(number, 0)
    if left <= 0:
        raise ExpressionError(f"{number} is not available")
    budget[number] = left - 1
    return number


def evaluate(text: str, budget: dict[int, int]) -> Value:
    """The exact value of an expression; literals are taken from (and decrement) `budget`."""
    return evaluate_tokens(tokenize(text), budget)


def divide(numerator: Value, denominator: Value) -> Value:
    """Exact division: an int when it divides evenly, else a Fraction; zero is an error."""
    if denominator == 0:
        raise ExpressionError("division by zero")
    if type(numerator) is int and type(denominator) is int:
        quotient, remainder = divmod(numerator, denominator)
        return quotient if remainder == 0 else Fraction(numerator, denominator)
    return Fraction(numerator) / denominator
