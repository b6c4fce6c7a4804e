"""Prompts of stage 1: four solve variants, their rationalization twins, and the reflection prompt.

Every prompt is a chat message list (`[{"role": "user", "content": ...}]`) ready for a chat
template. The solve variants share one goal and differ only in reasoning style, which is what gives
the silver traces their diversity; each asks for the final answer inside `<answer>` tags, the tag
the graders read. The wording is our own.
"""

from __future__ import annotations

import re
from typing import Literal, TypedDict


class ChatMessage(TypedDict):
    """One turn of a chat."""

    role: Literal["system", "user", "assistant"]
    content: str


ANSWER_INSTRUCTION = (
    "When you are done, give your final answer inside <answer> </answer> tags, "
    "in the form the question asks for."
)
"""The closing instruction every solve prompt ends with."""

SOLVE_STYLES: dict[str, str] = {
    "step_by_step": (
        "Work through the problem one step at a time, showing your reasoning as you go."
    ),
    "plan_then_execute": (
        "Before solving anything, write a detailed plan: list the steps you will take and why. "
        "Then carry out the plan step by step."
    ),
    "alternatives": (
        "Propose several different candidate answers, reasoning about each one in turn. "
        'Start each new candidate with "Alternatively,". '
        "Then decide which candidate is right."
    ),
    "restate": (
        "First restate the question in your own words so that it is clear what is being asked. "
        "Then solve it."
    ),
}
"""Reasoning style of each solve variant, keyed by its stable id."""

SOLVE_VARIANTS: tuple[str, ...] = tuple(SOLVE_STYLES)
"""Stable ids of the solve variants, in their canonical order (the first is the plain one)."""

DEFAULT_SOLVE_VARIANT = SOLVE_VARIANTS[0]
"""The variant `no-prompt-diversity` keeps: plain step-by-step."""

HINT_PREFIX = "hint_"
"""Rationalization variant ids are the solve variant ids with this prefix."""

RATIONALIZATION_VARIANTS: tuple[str, ...] = tuple(HINT_PREFIX + v for v in SOLVE_VARIANTS)
"""Stable ids of the rationalization variants (one per solve variant)."""

_HINT_INSTRUCTION = (
    "You are given the correct final answer below so that you can check your work: {answer}\n"
    "Solve the problem as if you had worked it out entirely on your own. Do not mention, quote or "
    "refer to this hint, the fact that an answer was given, or where it came from."
)


class UnknownPromptVariantError(ValueError):
    """A solve variant id that is neither a solve nor a rationalization variant."""

    def __init__(self, variant: str) -> None:
        allowed = ", ".join(SOLVE_VARIANTS + RATIONALIZATION_VARIANTS)
        super().__init__(f"unknown prompt variant {variant!r}; allowed: {allowed}")
        self.variant = variant


def _user(content: str) -> list[ChatMessage]:
    return [{"role": "user", "content": content}]


def _style(variant: str) -> str:
    style = SOLVE_STYLES.get(variant)
    if style is None:
        raise UnknownPromptVariantError(variant)
    return style


def question_prompt(question: str) -> list[ChatMessage]:
    """The question alone (it states its answer format), as the user turn of the silver traces:
    the prompt of GRPO rollouts and of evaluation, so that every stage's model sees the same."""
    return _user(question.strip())


def solve_prompt(question: str, variant: str = DEFAULT_SOLVE_VARIANT) -> list[ChatMessage]:
    """The solve prompt of one variant for a question.

    `variant` may be a solve variant id (`step_by_step`, `plan_then_execute`, `alternatives`,
    `restate`) or a rationalization id (`hint_…`); the latter needs `rationalization_prompt`
    because it shows the answer, so it is rejected here.
    """
    return _user(f"{question.strip()}\n\n{_style(variant)}\n{ANSWER_INSTRUCTION}")


def rationalization_prompt(question: str, answer: str, variant: str) -> list[ChatMessage]:
    """A solve prompt that shows the correct answer as a hint and asks the model not to mention it.

    `variant` is a rationalization id (`hint_step_by_step`, …) or a plain solve id, whose style is
    then used. Hints are for samples only, never for reflections.
    """
    style = _style(variant.removeprefix(HINT_PREFIX))
    hint = _HINT_INSTRUCTION.format(answer=answer.strip())
    return _user(f"{question.strip()}\n\n{hint}\n\n{style}\n{ANSWER_INSTRUCTION}")


def prompt_for_variant(question: str, variant: str, answer: str | None = None) -> list[ChatMessage]:
    """Dispatch on a variant id: a `hint_…` id needs the reference `answer`, a plain id ignores it."""
    if variant.startswith(HINT_PREFIX):
        if answer is None:
            raise ValueError(f"prompt variant {variant!r} needs the reference answer")
        return rationalization_prompt(question, answer, variant)
    return solve_prompt(question, variant)


_HINT_MENTION = re.compile(
    r"\bhints?\b"
    r"|\b(?:given|provided|supplied|stated|expected|reference|known)\s+(?:final\s+)?answer\b"
    r"|\banswer\s+(?:was|is|has\s+been)\s+(?:given|provided|supplied|stated)\b"
    r"|\b(?:we|i)\s+(?:were|was|are|am)\s+told\b"
    r"|\b(?:as|which)\s+(?:was\s+)?(?:given|provided)\s+(?:above|in\s+the\s+(?:prompt|question))\b",
    re.IGNORECASE,
)


def mentions_hint(response: str) -> bool:
    """Whether a response betrays the hint of a rationalization prompt; such responses are dropped.

    It looks for talk *about* a given answer ("the hint", "the provided answer", "we are told",
    "as given in the prompt"), not for the answer itself, which a correct solution must state.
    """
    return _HINT_MENTION.search(response) is not None


REFLECTION_TEMPLATE = """Below is a question and one response to it. Your job is to check the \
response critically, not to solve the question yourself.

Question:
{question}

Response:
{response}

Go through the response carefully: check each step, each calculation and whether the final answer \
in <answer> tags really answers the question. Point out any mistake you find. Do NOT correct the \
response or give a better answer; only judge it.

End with your verdict on the response's final answer, exactly one of:
<verdict>Correct</verdict>
<verdict>Incorrect</verdict>"""
"""The reflection prompt; the question and the response are filled in verbatim."""


ANSWER_OPENER = "\n\nSo the final answer is <answer>"
"""Appended to a sample that ended without an `<answer>`, which the model then completes."""

VERDICT_OPENER = "\n\n<verdict>"
"""Appended to a reflection that ended without a `<verdict>`, which the model then completes."""


def reflection_prompt(question: str, response: str) -> list[ChatMessage]:
    """Ask the model to critique one response, without fixing it, and end with a `<verdict>`."""
    return _user(REFLECTION_TEMPLATE.format(question=question.strip(), response=response.strip()))
