"""Build the packaged word list `pkg/skillfactory/tasks/data/words.txt` from Debian's SCOWL lists.

The letter-countdown and acronym tasks need a dictionary that ships with the library (no network).
We take the *small* American English list (SCOWL sizes 10-35: the common words), keep plain
lowercase words of 2-9 letters, and drop what is not a word a solver should be asked for: Roman
numerals and letter strings without a vowel (abbreviations such as "cc", "ms", "nth").

Set-up, once, on Debian/Ubuntu:  apt-get install -y wamerican-small wamerican
Run:                             python scripts/build_wordlist.py
The output is sorted and deterministic; its provenance and licence are in the sibling README.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

SOURCES = (Path("/usr/share/dict/american-english-small"), Path("/usr/share/dict/american-english"))
"""Preferred first: wamerican-small holds only SCOWL's common sizes; wamerican (size 50) is the
fallback when the small list is not installed."""

OUTPUT = Path(__file__).resolve().parents[1] / "pkg/skillfactory/tasks/data/words.txt"
MIN_LENGTH, MAX_LENGTH = 2, 9
_PLAIN_WORD = re.compile(rf"[a-z]{{{MIN_LENGTH},{MAX_LENGTH}}}")
_VOWEL = re.compile(r"[aeiouy]")

_ROMAN_DIGITS = (
    (1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc"),
    (50, "l"), (40, "xl"), (10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i"),
)  # fmt: skip


def roman_numeral(value: int) -> str:
    """The canonical lowercase Roman numeral of a positive integer."""
    parts = []
    for amount, digits in _ROMAN_DIGITS:
        count, value = divmod(value, amount)
        parts.append(digits * count)
    return "".join(parts)


ROMAN_NUMERALS = frozenset(roman_numeral(n) for n in range(1, 400))
"""Numerals up to 399 appear in SCOWL as lowercase "words" (xiv, xxi); larger ones (mix = 1009) are
real words and stay."""


def is_kept(word: str) -> bool:
    """A plain lowercase word of the right length with a vowel, and not a Roman numeral."""
    return (
        _PLAIN_WORD.fullmatch(word) is not None
        and _VOWEL.search(word) is not None
        and word not in ROMAN_NUMERALS
    )


def build_words(source: Path) -> list[str]:
    """The sorted, deduplicated words of a /usr/share/dict list that pass `is_kept`."""
    lines = source.read_text(encoding="utf-8", errors="replace").splitlines()
    return sorted({word for word in (line.strip() for line in lines) if is_kept(word)})


def first_existing(paths: tuple[Path, ...]) -> Path:
    """The first installed source list; exits with the apt-get command when none is."""
    for path in paths:
        if path.is_file():
            return path
    sys.exit("no word list found: run `apt-get install -y wamerican-small wamerican` first")


def main() -> None:
    """Write the word list and say how many words it holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="a /usr/share/dict word list")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    source = args.source or first_existing(SOURCES)
    words = build_words(source)
    args.output.write_text("\n".join(words) + "\n", encoding="utf-8")
    print(f"{len(words)} words from {source} -> {args.output}")


if __name__ == "__main__":
    main()
