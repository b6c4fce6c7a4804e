"""The packaged dictionary, letter-countdown, acronym and multiplication graders."""

from __future__ import annotations

from collections import Counter

import pytest

from skillfactory.tasks import AcronymTask, LetterCountdownTask, MultiplicationTask, Problem
from skillfactory.tasks.acronym import initials, is_subsequence
from skillfactory.tasks.multiplication import parse_integer
from skillfactory.tasks.words import dictionary, normalize_word, words_of_length


def test_packaged_dictionary_is_common_lowercase_words() -> None:
    words = dictionary()
    assert 5_000 <= len(words) <= 40_000
    assert all(word.isascii() and word.isalpha() and word.islower() for word in words)
    assert all(2 <= len(word) <= 10 for word in words)
    for common in ("house", "water", "word", "cake", "bank", "time"):
        assert common in words
    for not_a_word in ("xiv", "cc", "zzzz"):
        assert not_a_word not in words
    assert len(words_of_length(4)) > 1000 and len(words_of_length(5)) > 2000


def test_normalize_word() -> None:
    assert normalize_word("  House. ") == "house"
    assert normalize_word('"cake"') == "cake"
    assert normalize_word("two words") is None
    assert normalize_word("c4ke") is None
    assert normalize_word("") is None


def letters_problem(letters: str, length: int) -> Problem:
    data = {"letters": list(letters), "length": length}
    return Problem("l", f"letter-countdown-{length}", "q", "", data)


@pytest.mark.parametrize(
    ("letters", "answer", "correct"),
    [
        ("tacexyz", "cat", False),  # too short
        ("tacsexyz", "cats", True),
        ("tacsexyz", "acts", True),  # any word from the letters, not only the hidden one
        ("tacsexyz", "Cast", True),
        ("tacsexyz", "tact", False),  # t given once
        ("tacsexyz", "caty", False),  # not a word
        ("tacsexyz", "cats!", False),
    ],
)
def test_letter_countdown_grader(letters: str, answer: str, correct: bool) -> None:
    assert LetterCountdownTask(4).check(letters_problem(letters, 4), answer) is correct


def test_letter_countdown_generator_hides_its_word() -> None:
    task = LetterCountdownTask(5)
    for problem in task.problems(50, seed=2):
        letters = problem.data["letters"]
        assert len(letters) == 5 + 3
        assert not Counter(problem.answer) - Counter(letters)
        assert problem.answer in words_of_length(5)


def acronym_problem(words: list[str], length: int) -> Problem:
    return Problem("a", f"acronym-{length}", "q", "", {"words": words, "length": length})


def test_acronym_grader() -> None:
    words = ["Crisp", "apple", "zebra", "trees", "sunny", "xylophone"]
    problem = acronym_problem(words, 4)
    task = AcronymTask(4)
    assert task.check(problem, "cats")
    assert task.check(problem, "CATS.")
    assert not task.check(problem, "cat")  # wrong length
    assert not task.check(problem, "scat")  # not in order
    assert not task.check(problem, "catz")  # not a word


def test_subsequence_and_initials() -> None:
    assert initials(["Alpha", "beta"]) == "ab"
    assert is_subsequence("ace", "abcde")
    assert not is_subsequence("aec", "abcde")
    assert not is_subsequence("aa", "ab")


def test_acronym_generator_hides_its_word() -> None:
    task = AcronymTask(5)
    for problem in task.problems(50, seed=4):
        words = problem.data["words"]
        assert len(words) == 5 + 2
        assert is_subsequence(problem.answer, initials(words))
        assert all(word in problem.question for word in words)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1234", 1234),
        ("1,234", 1234),
        (" 1 234 ", 1234),
        ("-56", -56),
        ("1234.0", None),
        ("1234 apples", None),
        ("12*34", None),
        ("١٢٣", None),
        ("", None),
        ("9" * 100, None),
    ],
)
def test_parse_integer(text: str, value: int | None) -> None:
    assert parse_integer(text) == value


def test_multiplication_problems_have_the_right_digits() -> None:
    for digits in (2, 3, 4, 5):
        for problem in MultiplicationTask(digits).problems(20, seed=9):
            a, b = problem.data["a"], problem.data["b"]
            assert len(str(a)) == digits and len(str(b)) == digits
            assert problem.answer == str(a * b)
            assert MultiplicationTask(digits).check(problem, f"{a * b:,}")
