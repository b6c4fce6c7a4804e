"""A safe, exact evaluator for countdown answers: integer literals, + - * / (also × ÷ −), parentheses.

Model text is never handed to `eval`. A small tokenizer and a recursive-descent parser evaluate the
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
    return _TOKENS.findall(text.translate(_ASCII_OPERATORS))


def evaluate_tokens(tokens: list[str], budget: dict[int, int]) -> Value:
    """The exact value of a whole token list; literals are taken from (and decrement) `budget`."""
    parser = _Parser(tokens, budget)
    value = parser.expression()
    if parser.pos != len(tokens):
        raise ExpressionError(f"unexpected {tokens[parser.pos]!r}")
    return value


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


class _Parser:
    """expression := term (("+" | "-") term)* ; term := factor (("*" | "/") factor)* ;
    factor := literal | "(" expression ")" | "-" factor."""

    __slots__ = ("tokens", "pos", "budget", "depth")

    def __init__(self, tokens: list[str], budget: dict[int, int]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.budget = budget
        self.depth = 0

    def expression(self) -> Value:
        value = self.term()
        tokens = self.tokens
        while self.pos < len(tokens):
            operator = tokens[self.pos]
            if operator == "+":
                self.pos += 1
                value = value + self.term()
            elif operator == "-":
                self.pos += 1
                value = value - self.term()
            else:
                break
        return value

    def term(self) -> Value:
        value = self.factor()
        tokens = self.tokens
        while self.pos < len(tokens):
            operator = tokens[self.pos]
            if operator == "*":
                self.pos += 1
                value = value * self.factor()
            elif operator == "/":
                self.pos += 1
                value = divide(value, self.factor())
            else:
                break
        return value

    def factor(self) -> Value:
        if self.pos >= len(self.tokens):
            raise ExpressionError("expression ends too early")
        token = self.tokens[self.pos]
        self.pos += 1
        if "0" <= token[0] <= "9":
            return self.literal(token)
        if token == "(":
            self.enter()
            value = self.expression()
            if self.pos >= len(self.tokens) or self.tokens[self.pos] != ")":
                raise ExpressionError("unbalanced parentheses")
            self.pos += 1
            self.depth -= 1
            return value
        if token == "-":
            self.enter()
            value = -self.factor()
            self.depth -= 1
            return value
        raise ExpressionError(f"unexpected {token!r}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExpressionError("nested too deeply")

    def literal(self, token: str) -> int:
        if len(token) > MAX_LITERAL_DIGITS:
            raise ExpressionError("literal too large")
        number = int(token)
        left = self.budget.get(number, 0)
        if left <= 0:
            raise ExpressionError(f"{number} is not available")
        self.budget[number] = left - 1
        return number
