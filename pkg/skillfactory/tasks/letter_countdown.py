"""letter-countdown-L: make a dictionary word of L letters from a set of given letters.

The generator picks a word of L letters and adds distractor letters, shuffled. Any dictionary word
of length L that uses each letter at most as often as it is given is correct, not only the word the
generator picked.
"""

from __future__ import annotations

import random
import string
from collections import Counter

from skillfactory.tasks.base import Problem, ProblemFieldError
from skillfactory.tasks.words import is_word, normalize_word, words_of_length

LENGTHS = (4, 5)
DISTRACTORS = 3
"""Letters added to the hidden word's letters."""


def question_text(letters: list[str], length: int) -> str:
    """The prompt of a letter-countdown problem."""
    listed = ", ".join(letters)
    return (
        f"Here are some letters: {listed}. Find an English word of exactly {length} letters that "
        "uses only these letters, each at most as many times as it appears in the list. "
        "Give the word inside <answer> </answer> tags, for example <answer>word</answer>."
    )


def read_letters(problem: Problem) -> tuple[list[str], int]:
    """The given letters and the word length; `ProblemFieldError` when malformed."""
    letters, length = problem.data.get("letters"), problem.data.get("length")
    if not isinstance(letters, list) or not all(isinstance(x, str) for x in letters):
        raise ProblemFieldError("letters")
    if type(length) is not int:
        raise ProblemFieldError("length")
    return [letter.lower() for letter in letters], length


def uses_only(word: str, letters: list[str]) -> bool:
    """Whether each letter of `word` is available often enough in `letters`."""
    return not Counter(word) - Counter(letters)


class LetterCountdownTask:
    """letter-countdown-L: L + 3 shuffled letters hiding at least one word of L letters."""

    def __init__(self, length: int) -> None:
        if length not in LENGTHS:
            raise ValueError(f"letter-countdown length must be one of {LENGTHS}, not {length}")
        self.length = length
        self.name = f"letter-countdown-{length}"

    def problems(self, n: int, seed: int = 0, split: str = "train") -> list[Problem]:
        """`n` problems; problem i depends only on (name, split, seed, i)."""
        return [self.problem(i, seed, split) for i in range(n)]

    def problem(self, index: int, seed: int = 0, split: str = "train") -> Problem:
        """The `index`-th problem of a seeded stream."""
        rng = random.Random(f"{self.name}/{split}/{seed}/{index}")
        word = rng.choice(words_of_length(self.length))
        letters = list(word) + [rng.choice(string.ascii_lowercase) for _ in range(DISTRACTORS)]
        rng.shuffle(letters)
        return Problem(
            f"{self.name}-{split}-{seed}-{index}",
            self.name,
            question_text(letters, self.length),
            word,
            {"letters": letters, "length": self.length},
        )

    def check(self, problem: Problem, answer: str) -> bool:
        """Whether the answer is a dictionary word of the length, made of the given letters."""
        letters, length = read_letters(problem)
        word = normalize_word(answer)
        return word is not None and is_word(word, length) and uses_only(word, letters)
