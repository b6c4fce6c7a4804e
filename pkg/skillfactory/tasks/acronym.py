"""acronym-L: the initials of some of the given words, in order, spell a dictionary word of L letters.

The generator picks a hidden word of L letters, one cue word per letter (starting with it), and a
few distractor words inserted at random places. Any dictionary word of length L that is a
subsequence of the initials is correct, not only the hidden one.
"""

from __future__ import annotations

import random
from functools import cache

from skillfactory.tasks.base import Problem, ProblemFieldError
from skillfactory.tasks.words import is_word, normalize_word, words_by_initial, words_of_length

LENGTHS = (4, 5)
DISTRACTORS = 2
"""Words added to the L cue words."""


def question_text(words: list[str], length: int) -> str:
    """The prompt of an acronym problem."""
    listed = ", ".join(words)
    return (
        f"Here is a list of words: {listed}. Choose some of them, keeping their order, so that "
        f"their first letters spell an English word of exactly {length} letters. "
        "Give that word inside <answer> </answer> tags, for example <answer>word</answer>."
    )


def is_subsequence(word: str, letters: str) -> bool:
    """Whether `word` can be read from `letters` left to right, skipping some."""
    remaining = iter(letters)
    return all(letter in remaining for letter in word)


def read_words(problem: Problem) -> tuple[list[str], int]:
    """The given words and the answer length; `ProblemFieldError` when malformed."""
    words, length = problem.data.get("words"), problem.data.get("length")
    if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
        raise ProblemFieldError("words")
    if type(length) is not int:
        raise ProblemFieldError("length")
    return words, length


@cache
def spellable_words(length: int) -> tuple[str, ...]:
    """Words of `length` letters whose every letter starts some cue word."""
    cue_initials = words_by_initial().keys()
    return tuple(word for word in words_of_length(length) if set(word) <= cue_initials)


def initials(words: list[str]) -> str:
    """The lowercase first letter of each word."""
    return "".join(word[0].lower() for word in words)


class AcronymTask:
    """acronym-L: L cue words plus 2 distractors, whose initials hide a word of L letters."""

    def __init__(self, length: int) -> None:
        if length not in LENGTHS:
            raise ValueError(f"acronym length must be one of {LENGTHS}, not {length}")
        self.length = length
        self.name = f"acronym-{length}"

    def problems(self, n: int, seed: int = 0, split: str = "train") -> list[Problem]:
        """`n` problems; problem i depends only on (name, split, seed, i)."""
        return [self.problem(i, seed, split) for i in range(n)]

    def problem(self, index: int, seed: int = 0, split: str = "train") -> Problem:
        """The `index`-th problem of a seeded stream."""
        rng = random.Random(f"{self.name}/{split}/{seed}/{index}")
        by_initial = words_by_initial()
        hidden = rng.choice(spellable_words(self.length))
        words = [rng.choice(by_initial[letter]) for letter in hidden]
        for _ in range(DISTRACTORS):
            words.insert(
                rng.randint(0, len(words)), rng.choice(by_initial[rng.choice("etaoinshr")])
            )
        return Problem(
            f"{self.name}-{split}-{seed}-{index}",
            self.name,
            question_text(words, self.length),
            hidden,
            {"words": words, "length": self.length},
        )

    def check(self, problem: Problem, answer: str) -> bool:
        """Whether the answer is a dictionary word of the length hidden in the initials."""
        words, length = read_words(problem)
        word = normalize_word(answer)
        return word is not None and is_word(word, length) and is_subsequence(word, initials(words))
