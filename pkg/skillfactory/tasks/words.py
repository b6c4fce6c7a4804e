"""The packaged dictionary of the word tasks (letter-countdown, acronym).

`data/words.txt` holds common lowercase English words of 2-9 letters (SCOWL via Debian's
wamerican-small; see `data/README.md` and `scripts/build_wordlist.py`). It is read once, lazily,
through `importlib.resources`, so it works from a wheel as well as from a checkout.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

WORD_FILE = "data/words.txt"
_PLAIN_WORD = re.compile(r"[a-z]+")


@cache
def dictionary() -> frozenset[str]:
    """Every word of the packaged list."""
    text = resources.files("skillfactory.tasks").joinpath(WORD_FILE).read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


@cache
def words_of_length(length: int) -> tuple[str, ...]:
    """The dictionary's words of exactly `length` letters, sorted (a stable order for seeding)."""
    return tuple(sorted(word for word in dictionary() if len(word) == length))


@cache
def words_by_initial(min_length: int = 3, max_length: int = 8) -> dict[str, tuple[str, ...]]:
    """Sorted dictionary words of the given lengths, grouped by first letter."""
    groups: dict[str, list[str]] = {}
    for word in sorted(dictionary()):
        if min_length <= len(word) <= max_length:
            groups.setdefault(word[0], []).append(word)
    return {initial: tuple(words) for initial, words in groups.items()}


def normalize_word(answer: str) -> str | None:
    """An answer as a lowercase word: surrounding spaces, quotes and a final period are dropped;
    None when what is left is not a plain a-z word."""
    word = answer.strip().strip("\"'`*").rstrip(".").strip().lower()
    return word if _PLAIN_WORD.fullmatch(word) else None


def is_word(word: str, length: int) -> bool:
    """Whether `word` is a dictionary word of exactly `length` letters."""
    return len(word) == length and word in dictionary()
