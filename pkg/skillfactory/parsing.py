"""Tolerant parsers for the tags of the method: <answer>, <verdict>, <sample>, <reflect>, <think>.

Model output is messy: tags come in any case, with spaces inside the brackets, and the last one is
often left open when generation stops. A grader must read what a human would read, so every
parser here accepts `< Answer >`, `</ answer>` and a final unclosed tag, and never raises on text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

MAX_RESPONSE_CHARS = 200_000
"""Responses longer than this are cut before parsing, which keeps every parser linear and bounded."""


@cache
def _open_tag(tag: str) -> re.Pattern[str]:
    return re.compile(rf"<\s*{tag}\s*>", re.IGNORECASE)


@cache
def _close_tag(tag: str) -> re.Pattern[str]:
    return re.compile(rf"<\s*/\s*{tag}\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Span:
    """One tagged block: its inner text and where the block starts and ends in the response."""

    text: str
    start: int
    end: int
    closed: bool


def find_blocks(text: str, tag: str) -> list[Span]:
    """Every `<tag>…</tag>` block in order; an unclosed last block runs to the end of the text.

    Blocks do not nest: when a block is opened again before it is closed, the earlier opening is
    abandoned, so in `<answer>A, <answer>B</answer>` the block holds `B`, as a reader takes it.
    """
    text = text[:MAX_RESPONSE_CHARS]
    opener, closer = _open_tag(tag), _close_tag(tag)
    blocks: list[Span] = []
    pos = 0
    while (start := opener.search(text, pos)) is not None:
        end = closer.search(text, start.end())
        limit = end.start() if end is not None else len(text)
        while (again := opener.search(text, start.end(), limit)) is not None:
            start = again
        if end is None:
            blocks.append(Span(text[start.end() :].strip(), start.start(), len(text), False))
            break
        blocks.append(Span(text[start.end() : end.start()].strip(), start.start(), end.end(), True))
        pos = end.end()
    return blocks


def last_block(text: str, tag: str) -> str | None:
    """Inner text of the last `<tag>` block, or None when there is none."""
    blocks = find_blocks(text, tag)
    return blocks[-1].text if blocks else None


def extract_answer(response: str) -> str | None:
    """The final answer: the inner text of the last `<answer>` block, stripped; None if absent/empty.

    For a full trace this is the `<answer>` after `</think>`, since that one comes last.
    """
    answer = last_block(response, "answer")
    return answer if answer else None


def count_answers(response: str) -> int:
    """`#Ans`: how many `<answer>` attempts the response makes; an empty `<answer> </answer>`
    (a model echoing the instruction's format) is no attempt."""
    return sum(1 for block in find_blocks(response, "answer") if block.text.strip())


def count_reflections(response: str) -> int:
    """`#Ref`: how many `<reflect>` blocks the response holds."""
    return len(find_blocks(response, "reflect"))


_VERDICT_WORDS = {"correct": True, "incorrect": False}


def parse_verdict(text: str) -> bool | None:
    """The verdict of a reflection: True for Correct, False for Incorrect, None when missing or odd.

    The last `<verdict>` block decides. Surrounding punctuation and case are ignored; anything other
    than the two words (e.g. "Partially correct") is odd and gives None.
    """
    verdict = last_block(text, "verdict")
    if verdict is None:
        return None
    word = verdict.strip().strip(".!*\"' \t\n").lower()
    return _VERDICT_WORDS.get(word)


def think_and_after(response: str) -> tuple[str | None, str]:
    """Split a trace into the inside of `<think>` (None if absent) and the text after `</think>`."""
    blocks = find_blocks(response, "think")
    if not blocks:
        return None, response
    first = blocks[0]
    return first.text, response[first.end :] if first.closed else ""
