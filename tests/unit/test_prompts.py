"""The solve, rationalization and reflection prompts, and hint detection."""

from __future__ import annotations

import pytest

from skillfactory.prompts import (
    DEFAULT_SOLVE_VARIANT,
    RATIONALIZATION_VARIANTS,
    SOLVE_VARIANTS,
    UnknownPromptVariantError,
    mentions_hint,
    prompt_for_variant,
    rationalization_prompt,
    reflection_prompt,
    solve_prompt,
)

QUESTION = "Using the numbers 3, 5, 7, make 26."


def content(messages: list) -> str:  # type: ignore[type-arg]
    assert len(messages) == 1 and messages[0]["role"] == "user"
    return str(messages[0]["content"])


def test_four_solve_variants_with_stable_ids() -> None:
    assert SOLVE_VARIANTS == ("step_by_step", "plan_then_execute", "alternatives", "restate")
    assert DEFAULT_SOLVE_VARIANT == "step_by_step"


@pytest.mark.parametrize("variant", SOLVE_VARIANTS)
def test_solve_prompts_share_the_goal_and_ask_for_answer_tags(variant: str) -> None:
    text = content(solve_prompt(QUESTION, variant))
    assert text.startswith(QUESTION)
    assert "<answer>" in text and "</answer>" in text


def test_solve_prompts_differ_in_style() -> None:
    texts = {v: content(solve_prompt(QUESTION, v)) for v in SOLVE_VARIANTS}
    assert len(set(texts.values())) == 4
    assert "plan" in texts["plan_then_execute"].lower()
    assert '"Alternatively,"' in texts["alternatives"]
    assert "own words" in texts["restate"]
    assert "step" in texts["step_by_step"].lower()


def test_unknown_variant_lists_the_allowed_ones() -> None:
    with pytest.raises(UnknownPromptVariantError, match="allowed: step_by_step"):
        solve_prompt(QUESTION, "freestyle")
    with pytest.raises(UnknownPromptVariantError):
        solve_prompt(QUESTION, "hint_restate")  # needs the answer: rationalization_prompt


@pytest.mark.parametrize("variant", RATIONALIZATION_VARIANTS)
def test_rationalization_prompts_show_the_answer_and_forbid_mentioning_it(variant: str) -> None:
    text = content(rationalization_prompt(QUESTION, "(3 + 5) * 7 - 30", variant))
    assert "(3 + 5) * 7 - 30" in text
    assert "Do not mention" in text
    assert "<answer>" in text
    plain = content(solve_prompt(QUESTION, variant.removeprefix("hint_")))
    assert plain.split("\n\n")[-1] in text, "same style as the plain variant"


def test_prompt_for_variant_dispatches() -> None:
    assert prompt_for_variant(QUESTION, "restate") == solve_prompt(QUESTION, "restate")
    assert "26" in content(prompt_for_variant(QUESTION, "hint_restate", answer="26"))
    with pytest.raises(ValueError, match="needs the reference answer"):
        prompt_for_variant(QUESTION, "hint_restate")


def test_reflection_prompt_shows_question_and_response_and_asks_for_a_verdict() -> None:
    response = "3 * 7 + 5 = 26 <answer>3 * 7 + 5</answer>"
    text = content(reflection_prompt(QUESTION, response))
    assert QUESTION in text and response in text
    assert "<verdict>Correct</verdict>" in text and "<verdict>Incorrect</verdict>" in text
    assert "Do NOT correct" in text
    assert text.rstrip().endswith("<verdict>Incorrect</verdict>")


@pytest.mark.parametrize(
    "response",
    [
        "Using the hint, the answer is 26. <answer>26</answer>",
        "The provided answer says 26, so <answer>26</answer>",
        "We are told the result, so <answer>26</answer>",
        "As given in the prompt, <answer>26</answer>",
        "The expected answer is 26.",
        "the answer was given as 26",
    ],
)
def test_mentions_hint_catches_talk_about_the_given_answer(response: str) -> None:
    assert mentions_hint(response)


@pytest.mark.parametrize(
    "response",
    [
        "3 * 7 = 21, 21 + 5 = 26. <answer>3 * 7 + 5</answer>",
        "Alternatively, 26 = 5 * 7 - 9, but 9 is not given. <answer>3 * 7 + 5</answer>",
        "The given numbers are 3, 5 and 7; the answer is 26. <answer>26</answer>",
        "Let me think about this: shine, thin, chin. <answer>26</answer>",
    ],
)
def test_mentions_hint_leaves_honest_solutions_alone(response: str) -> None:
    assert not mentions_hint(response)
