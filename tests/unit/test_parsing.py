"""Tag parsers read model text the way a grader must: tolerant, bounded, never raising."""

from __future__ import annotations

import pytest

from skillfactory.parsing import (
    count_answers,
    count_reflections,
    extract_answer,
    find_blocks,
    parse_verdict,
    think_and_after,
)


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("work <answer>42</answer>", "42"),
        ("<answer>1</answer> then <answer>2</answer>", "2"),
        ("< Answer > 7 </ ANSWER >", "7"),
        ("cut off <answer> 9", "9"),
        ("no tags at all", None),
        ("<answer>   </answer>", None),
        ("<answer>A: slow, <answer>B: crash, <answer>D</answer>", "D"),
        ("<answer>x</answer> <answer>y", "y"),
    ],
)
def test_extract_answer(response: str, answer: str | None) -> None:
    assert extract_answer(response) == answer


def test_reopened_block_abandons_the_earlier_opening() -> None:
    (block,) = find_blocks("<sample>a <sample>b</sample>", "sample")
    assert block.text == "b" and block.closed


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("fine <verdict>Correct</verdict>", True),
        ("<verdict> incorrect. </verdict>", False),
        ("<verdict>Correct</verdict> on reflection <verdict>Incorrect</verdict>", False),
        ("<verdict>Partially correct</verdict>", None),
        ("no verdict", None),
    ],
)
def test_parse_verdict(text: str, verdict: bool | None) -> None:
    assert parse_verdict(text) is verdict


def test_counts_and_think_split() -> None:
    trace = (
        "<think>\n<sample>a <answer>1</answer></sample>\n<reflect>no <verdict>Incorrect</verdict>"
        "</reflect>\n<sample>b <answer>2</answer></sample>\n<reflect>ok</reflect>\n</think>\n"
        "So the final answer is:\n<answer>2</answer>"
    )
    assert count_answers(trace) == 3 and count_reflections(trace) == 2
    assert count_answers("Put it in <answer> </answer> tags. <answer>B</answer>") == 1
    inside, after = think_and_after(trace)
    assert inside is not None and inside.startswith("<sample>a")
    assert after.strip().endswith("<answer>2</answer>")


def test_huge_hostile_input_is_bounded() -> None:
    assert extract_answer("<answer>" * 100_000) is None
    assert extract_answer("<answer>1</answer>" * 50_000) == "1"
