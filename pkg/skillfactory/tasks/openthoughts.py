"""openthoughts: questions of `open-thoughts/OpenThoughts3-1.2M` with boxed answers, graded like math500.

The paper's OpenThoughts setting (design §1): stage 1 samples the model on OpenThoughts questions
(with the rationalization prompts, `data.rationalization`), and the silver label of a row is the
last `\\boxed{}` of its assistant turn after the closing `</think>`.

Rows follow the Hub schema: `conversations`, a list of `{"from": "human" | "gpt", "value": …}`
turns, beside `domain`, `source` and `difficulty`. The question is the user turn (a closing
sentence asking for a `\\boxed{}` answer is dropped: our prompt asks for `<answer>` tags); the
answer is that boxed label. A row is refused (`MalformedRow`, saying why) when it has no user or
assistant turn, no `</think>`, no boxed answer after it (code rows, proofs), or boxed answers that
disagree; drawing problems skips refused rows and logs how many were skipped for which reason.

Sources: `source="hf"` reads the Hub dataset through `datasets` (imported then; its one split,
"train", serves every split asked for, since held-out draws skip stage 1's questions, see
`skillfactory.eval.held_out`); `source="packaged"` reads a handful of hand-written rows in the
same schema (`tasks/data/openthoughts-sample.jsonl`), for tests and offline runs. In a run spec
the task is `openthoughts` (packaged) or `openthoughts@hf` (the Hub dataset).

Grading is math500's: a normalized string match, integers compared in process, otherwise
`math_verify` in a bounded worker (`math500.equivalent_bounded`).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from skillfactory.tasks.base import Problem
from skillfactory.tasks.dataset_rows import (
    DatasetTask,
    DatasetUnavailableError,
    PackagedFile,
    read_packaged_rows,
    seeded_sample,
    unknown_split,
)
from skillfactory.tasks.math500 import (
    MAX_ANSWER_CHARS,
    equivalent_bounded,
    normalize_answer,
    plain_integer,
    question_text,
)

NAME = "openthoughts"
HF_DATASET = "open-thoughts/OpenThoughts3-1.2M"
HF_SPLIT = "train"
"""The Hub dataset's only split."""
PACKAGED_SPLITS = {
    HF_SPLIT: PackagedFile(
        "skillfactory", "tasks/data/openthoughts-sample.jsonl", "skillfactory (reinstall it)"
    )
}
USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant")
MAX_LABEL_CHARS = 1000
"""A longer boxed label is refused (MATH-style answers are short)."""
CHUNK_ROWS = 1024
"""Hub rows decoded at a time while drawing problems."""

_THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\s*\{")
_BOXED_REQUEST = re.compile(r"[^.?!\n]*\\boxed\{\}[^.?!\n]*[.?!]?")
_log = logging.getLogger(__name__)


class MalformedRow(ValueError):
    """A row that yields no problem; the message says which row and why."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"openthoughts row {index}: {reason}")
        self.index = index
        self.reason = reason


def boxed_answers(text: str) -> list[str]:
    """The contents of every `\\boxed{…}` in `text`, in order (nested braces matched; an unclosed
    one ends the search)."""
    answers = []
    position = 0
    while (match := _BOXED.search(text, position)) is not None:
        depth, start = 1, match.end()
        index = start
        while index < len(text) and depth:
            if text[index] == "{":
                depth += 1
            elif text[index] == "}":
                depth -= 1
            index += 1
        if depth:
            break
        answers.append(text[start : index - 1].strip())
        position = index
    return answers


def _turn(conversations: Sequence[Any], roles: tuple[str, ...], index: int, last: bool) -> str:
    turns = [t for t in conversations if isinstance(t, dict) and t.get("from") in roles]
    if not turns:
        raise MalformedRow(index, f"no turn from {' or '.join(roles)}")
    value = turns[-1 if last else 0].get("value")
    if not isinstance(value, str) or not value.strip():
        raise MalformedRow(index, f"the {roles[0]} turn has no text")
    return value


def silver_label(assistant: str, index: int = 0) -> str:
    """The last `\\boxed{}` after the closing `</think>` of an assistant turn; `MalformedRow` when
    there is none or the boxed answers there disagree."""
    closes = list(_THINK_CLOSE.finditer(assistant))
    if not closes:
        raise MalformedRow(index, "the assistant turn has no closing </think>")
    boxed = [answer for answer in boxed_answers(assistant[closes[-1].end() :]) if answer]
    if not boxed:
        raise MalformedRow(index, "no \\boxed{} answer after </think>")
    if len({normalize_answer(answer) for answer in boxed}) > 1:
        raise MalformedRow(index, f"conflicting boxed answers {boxed[:3]}")
    if len(boxed[-1]) > MAX_LABEL_CHARS:
        raise MalformedRow(index, f"a boxed answer longer than {MAX_LABEL_CHARS} characters")
    return boxed[-1]


def problem_from_row(row: Any, index: int, split: str = HF_SPLIT) -> Problem:
    """The problem of one row (see the module docstring); `MalformedRow` says why a row has none."""
    if not isinstance(row, dict):
        raise MalformedRow(index, f"expected a mapping, got {type(row).__name__}")
    conversations = row.get("conversations")
    if not isinstance(conversations, list):
        raise MalformedRow(index, "no 'conversations' list")
    question = _BOXED_REQUEST.sub("", _turn(conversations, USER_ROLES, index, last=False)).strip()
    if not question:
        raise MalformedRow(index, "the human turn is empty once the \\boxed{} request is dropped")
    answer = silver_label(_turn(conversations, ASSISTANT_ROLES, index, last=True), index)
    data = {key: row[key] for key in ("domain", "source", "difficulty") if key in row}
    return Problem(f"{NAME}-{split}-{index}", NAME, question_text(question), answer, data)


def answers_match(gold: str, answer: str) -> bool:
    """math500's check: normalized strings, then plain integers, then bounded math_verify."""
    if not answer.strip() or len(answer) > MAX_ANSWER_CHARS:
        return False
    if normalize_answer(answer) == normalize_answer(gold):
        return True
    gold_integer = plain_integer(gold)
    if gold_integer is not None and (answer_integer := plain_integer(answer)) is not None:
        return gold_integer == answer_integer
    return equivalent_bounded(gold, answer)


class OpenThoughtsTask(DatasetTask):
    """openthoughts from the packaged sample rows or, with source="hf", from OpenThoughts3."""

    name = NAME
    hf_dataset = HF_DATASET
    packaged_splits = PACKAGED_SPLITS
    default_split = HF_SPLIT

    def rows(self, split: str) -> Any:
        """The rows of a split: a `datasets.Dataset` (decoded only when drawn) for the Hub, the
        packaged rows otherwise."""
        if self.source == "hf":
            try:
                # deferred: heavy or optional (datasets)
                from datasets import load_dataset
            except ImportError:
                raise DatasetUnavailableError(
                    "source='hf' needs the datasets package: pip install datasets"
                ) from None
            return load_dataset(self.hf_dataset, split=HF_SPLIT)
        if split not in self.packaged_splits:
            raise unknown_split(self.name, split, tuple(self.packaged_splits))
        return read_packaged_rows(self.packaged_splits[split])

    def problems(self, n: int, seed: int = 0, split: str | None = None) -> list[Problem]:
        """A seeded draw of `n` problems: rows in a seeded order, refused rows skipped, until `n`
        (fewer when the rows run out)."""
        split = split or self.default_split
        rows = self.rows(split)
        order = seeded_sample(len(rows), len(rows), seed)
        problems: list[Problem] = []
        refused: Counter[str] = Counter()
        for start in range(0, len(order), CHUNK_ROWS):
            if len(problems) >= n:
                break
            chunk = order[start : start + CHUNK_ROWS]
            picked = rows.select(chunk) if hasattr(rows, "select") else [rows[i] for i in chunk]
            for index, row in zip(chunk, picked, strict=True):
                try:
                    problems.append(problem_from_row(row, index, HF_SPLIT))
                except MalformedRow as error:
                    refused[error.reason.split(" [")[0]] += 1
                if len(problems) >= n:
                    break
        if refused:
            _log.info("openthoughts: skipped %d rows: %s", sum(refused.values()), dict(refused))
        if not problems and len(rows):
            raise DatasetUnavailableError(
                f"no usable openthoughts row among {len(rows)}: {dict(refused)}"
            )
        return problems

    def check(self, problem: Problem, answer: str) -> bool:
        """Whether the answer equals the silver label (see `answers_match`)."""
        return answers_match(problem.answer, answer)
