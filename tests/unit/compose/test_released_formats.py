"""The released code's formats as variants: each format's structure read back from the text it
writes (what it ends on, how many correct and incorrect samples, the phrase class after each
sample, what follows `</think>`), the parameters, eligibility, and determinism by seed."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, get_args

import pytest

from skillfactory.compose import (
    BACKTRACK_PHRASES,
    CONFIRM_PHRASES,
    ENDING_PHRASES,
    GENERIC_GLUE,
    GLUE_AFTER_CORRECT,
    GLUE_AFTER_INCORRECT,
    RELEASED_FORMATS,
    VARIANTS,
    ComposeOptions,
    ProblemSamples,
    Reflection,
    Sample,
    compose,
    compose_problem,
    parse_samples_record,
    variant_name,
)
from skillfactory.parsing import extract_answer, parse_verdict, think_and_after
from skillfactory.prompts import SOLVE_VARIANTS
from skillfactory.runspec import Composition
from skillfactory.tasks.base import Problem

GOLD = "42"
RIGHT = Reflection("The product checks out. <verdict>Correct</verdict>", True)
WRONG = Reflection("The last step is off. <verdict>Incorrect</verdict>", False)
RELEASED = sorted(name for name in VARIANTS if name.startswith("released-"))
SINGLE_FORMATS = [f.variant for f in RELEASED_FORMATS]
_BLOCK = re.compile(r"<(sample|reflect)>\n(.*?)\n</\1>", re.DOTALL)


def sample(index: int, correct: bool, variant: str | None = None, kept: int = 2) -> Sample:
    """A sample with `kept` reflections the verdict filter keeps and one it drops."""
    answer = GOLD if correct else str(100 + index)
    right, wrong = (RIGHT, WRONG) if correct else (WRONG, RIGHT)
    text = f"Attempt {index}: working it out.\n<answer>{answer}</answer>"
    variant = variant or SOLVE_VARIANTS[index % len(SOLVE_VARIANTS)]
    return Sample(index, text, variant, correct, (*([right] * kept), wrong))


def problem(correct: list[bool], pid: str = "p0", **kwargs: Any) -> ProblemSamples:
    samples = tuple(sample(i, c, **kwargs) for i, c in enumerate(correct))
    return ProblemSamples(Problem(pid, "multiplication-2", "What is 6 * 7?", GOLD), samples)


MIXED = [i % 3 == 0 for i in range(24)]  # 8 correct, 16 incorrect, all four solve prompts


@dataclass(frozen=True)
class Parsed:
    """A released trace read back from its text."""

    samples: list[str]
    verdicts: list[bool | None]
    glue: list[str]
    after_think: str
    answer: str | None
    meta: dict[str, Any]

    @property
    def correct(self) -> list[bool]:
        """Correctness of each shown sample, from its answer."""
        return [extract_answer(text) == GOLD for text in self.samples]


def parse(record: dict[str, Any]) -> Parsed:
    text = record["messages"][1]["content"]
    think, after = think_and_after(text)
    assert think is not None
    samples, verdicts, glue, position = [], [], [], 0
    for block in _BLOCK.finditer(think):
        gap = think[position : block.start()].strip()
        if gap:
            glue.append(gap)
        if block.group(1) == "sample":
            samples.append(block.group(2))
        else:
            verdicts.append(parse_verdict(block.group(2)))
        position = block.end()
    assert not think[position:].strip(), "nothing after the last block inside <think>"
    return Parsed(samples, verdicts, glue, after.strip(), extract_answer(text), record["meta"])


def records(variant: str, item: ProblemSamples | None = None, **options: Any) -> list[Parsed]:
    composed = compose_problem(item or problem(MIXED), ComposeOptions(variant, **options))
    return [parse(record) for record in composed]


def closing_lines(trace: Parsed) -> list[str]:
    """The lines after `</think>` before the final `<answer>`."""
    closing = trace.after_think.rsplit("<answer>", 1)[0].strip()
    return closing.split("\n")


def assert_glue_matches(trace: Parsed, generic_only: bool = False) -> None:
    """Exactly one phrase between samples, from the class of the sample before it."""
    assert len(trace.glue) == len(trace.samples) - 1
    for before, phrase in zip(trace.correct, trace.glue, strict=False):
        if generic_only:
            assert phrase in GENERIC_GLUE
            continue
        matched, other = (
            (GLUE_AFTER_CORRECT, GLUE_AFTER_INCORRECT)
            if before
            else (GLUE_AFTER_INCORRECT, GLUE_AFTER_CORRECT)
        )
        assert phrase in matched + GENERIC_GLUE and phrase not in other


def assert_reflected(trace: Parsed) -> None:
    """Every sample shows one reflection whose verdict is the sample's correctness; no sample
    appears twice."""
    assert trace.verdicts == trace.correct
    assert len(set(trace.samples)) == len(trace.samples)
    assert trace.meta["n_samples"] == len(trace.samples)
    assert trace.meta["n_correct"] == sum(trace.correct)


def test_names_follow_the_rule_and_match_the_run_spec() -> None:
    names = {f.released_name: variant_name(f.released_name) for f in RELEASED_FORMATS}
    assert names == {
        "random": "released-random",
        "no_reflection": "released-no-reflection",
        "0C": "released-0c",
        "*C": "released-c",
        "*C_full": "released-c-full",
        "*C*IC": "released-c-ic",
        "*CC": "released-cc",
    }
    assert set(RELEASED) == {*names.values(), "released-default"}
    assert set(get_args(Composition)) == set(VARIANTS), "data.composition accepts every variant"


def test_phrase_classes_are_disjoint() -> None:
    classes = [
        GLUE_AFTER_CORRECT,
        GLUE_AFTER_INCORRECT,
        GENERIC_GLUE,
        ENDING_PHRASES,
        BACKTRACK_PHRASES,
        CONFIRM_PHRASES,
    ]
    phrases = [phrase for group in classes for phrase in group]
    assert len(phrases) == len(set(phrases))


@pytest.mark.parametrize("seed", range(6))
def test_0c_is_one_correct_sample(seed: int) -> None:
    found = records("released-0c", seed=seed, repeats_per_question=2)
    assert len(found) == 2
    for trace in found:
        assert trace.correct == [True] and trace.glue == []
        assert_reflected(trace)
        assert closing_lines(trace)[0] in ENDING_PHRASES and len(closing_lines(trace)) == 1
        assert trace.answer == GOLD and trace.meta["variant"] == "released-0c"


@pytest.mark.parametrize("seed", range(6))
def test_c_is_n_minus_one_of_any_correctness_then_a_correct_one(seed: int) -> None:
    found = records("released-c", seed=seed, max_samples_per_trace=4)
    assert len(found) == 3  # one per repeat
    for trace in found:
        assert len(trace.samples) == 4 and trace.correct[-1]
        assert_reflected(trace)
        assert_glue_matches(trace)
        assert len(closing_lines(trace)) == 1 and closing_lines(trace)[0] in ENDING_PHRASES
        assert trace.answer == GOLD


def test_c_mixes_correct_and_incorrect_samples_before_the_last() -> None:
    found = [t for seed in range(8) for t in records("released-c", seed=seed)]
    glue = {phrase for trace in found for phrase in trace.glue}
    for phrase_class in (GLUE_AFTER_CORRECT, GLUE_AFTER_INCORRECT, GENERIC_GLUE):
        assert glue & set(phrase_class), "every glue class is drawn"
    heads = [trace.correct[:-1] for trace in found]
    assert any(not all(head) for head in heads), "incorrect samples appear before the last"
    assert any(any(head) for head in heads), "correct samples appear before the last"


@pytest.mark.parametrize("seed", range(4))
def test_c_full_has_one_trace_per_length(seed: int) -> None:
    found = records("released-c-full", seed=seed, max_samples_per_trace=5, repeats_per_question=2)
    assert [len(t.samples) for t in found] == [1, 2, 3, 4, 5] * 2
    for trace in found:
        assert trace.correct[-1] and trace.answer == GOLD
        assert_reflected(trace)
        assert_glue_matches(trace)


@pytest.mark.parametrize("seed", range(8))
def test_c_ic_ends_incorrect_then_backtracks_to_the_latest_correct_sample(seed: int) -> None:
    for trace in records("released-c-ic", seed=seed, max_samples_per_trace=4):
        assert len(trace.samples) == 4
        assert not trace.correct[-1] and any(trace.correct[:-1])
        assert trace.meta["ends_correct"] is False
        assert_reflected(trace)
        assert_glue_matches(trace)
        latest_correct = max(i for i, ok in enumerate(trace.correct) if ok)
        restated = trace.samples[latest_correct]
        closing = trace.after_think.rsplit("<answer>", 1)[0].strip()
        phrase, rest = closing.split("\n", 1)
        assert phrase in BACKTRACK_PHRASES
        assert rest.startswith(restated + "\n"), "the latest correct sample is restated"
        assert rest.removeprefix(restated + "\n") in ENDING_PHRASES
        assert trace.answer == GOLD == extract_answer(restated)


@pytest.mark.parametrize("seed", range(8))
def test_cc_ends_on_two_correct_samples_then_a_confirmation(seed: int) -> None:
    for trace in records("released-cc", seed=seed, max_samples_per_trace=4):
        assert len(trace.samples) == 4 and trace.correct[-2:] == [True, True]
        assert_reflected(trace)
        assert_glue_matches(trace)
        confirm, ending = closing_lines(trace)
        assert confirm in CONFIRM_PHRASES and ending in ENDING_PHRASES
        assert trace.answer == GOLD


def test_random_ignores_correctness_and_answers_with_the_last_sample() -> None:
    found = [t for seed in range(6) for t in records("released-random", seed=seed)]
    assert [len(t.samples) for t in found[:5]] == [1, 2, 3, 4, 5]
    ends = [t.correct[-1] for t in found]
    assert any(ends) and not all(ends)
    for trace in found:
        assert_reflected(trace)
        assert_glue_matches(trace)
        assert trace.answer == extract_answer(trace.samples[-1])


def test_no_reflection_is_c_full_without_reflections_and_with_generic_glue() -> None:
    for seed in range(4):
        found = records("released-no-reflection", seed=seed, repeats_per_question=1)
        assert [len(t.samples) for t in found] == [1, 2, 3, 4, 5]
        for trace in found:
            assert trace.verdicts == [] and "verdict" not in trace.after_think
            assert trace.correct[-1] and len(set(trace.samples)) == len(trace.samples)
            assert_glue_matches(trace, generic_only=True)


def test_the_default_set_builds_its_four_formats_in_order_each_repeat() -> None:
    found = records("released-default", seed=3, repeats_per_question=2)
    order = ["released-0c", "released-c", "released-c-ic", "released-cc"]
    assert [t.meta["variant"] for t in found] == order * 2


def test_distinct_prompt_variants_give_each_sample_its_own_solve_prompt() -> None:
    item = problem(MIXED)
    variant_of = {s.text: s.prompt_variant for s in item.samples}  # a body is its whole text
    options = {"max_samples_per_trace": 4, "distinct_prompt_variants": True}
    for name in ("released-c", "released-c-full", "released-random", "released-no-reflection"):
        for seed in range(4):
            for trace in records(name, item, seed=seed, **options):
                shown = [variant_of[text] for text in trace.samples]
                assert len(set(shown)) == len(shown), name
    few = problem(MIXED, variant="step_by_step")
    assert records("released-c", few, distinct_prompt_variants=True) == []
    assert records("released-c", few) != []


@pytest.mark.parametrize("name", ["released-c", "released-c-ic", "released-cc"])
def test_vary_response_count_draws_n_between_two_and_l(name: str) -> None:
    lengths = Counter(
        len(t.samples)
        for seed in range(10)
        for t in records(name, seed=seed, max_samples_per_trace=5, vary_response_count=True)
    )
    assert set(lengths) == {2, 3, 4, 5}
    fixed = {len(t.samples) for seed in range(3) for t in records(name, seed=seed)}
    assert fixed == {5}


def test_problems_without_enough_usable_samples_or_a_correct_one_yield_nothing() -> None:
    options = ComposeOptions("released-default", 0, max_samples_per_trace=4)
    too_few = problem([True, False, False])
    no_correct = problem([False] * 8)
    unjudged = problem([True, False, True, False, False], kept=0)  # every reflection dropped
    summary = options.new_summary()
    for item in (too_few, no_correct, unjudged):
        assert compose_problem(item, options, summary) == []
    assert summary.problems_without_trace == 3 and summary.problems_without_correct == 1


def test_backtrack_needs_an_incorrect_sample_and_confirm_two_correct_ones() -> None:
    all_correct = [t.meta["variant"] for t in records("released-default", problem([True] * 6))]
    assert "released-c-ic" not in all_correct and all_correct.count("released-cc") == 3
    one_correct = problem([True] + [False] * 5)
    found = [t.meta["variant"] for t in records("released-default", one_correct)]
    assert "released-cc" not in found and found.count("released-c-ic") == 3
    assert records("released-cc", max_samples_per_trace=1) == []


def test_repeats_are_validated() -> None:
    with pytest.raises(ValueError, match="repeats_per_question"):
        ComposeOptions("released-default", repeats_per_question=0)


HAND_MADE = [  # (correctness of each sample, reflections kept per sample)
    ([True, False, False, True, False, True], 2),  # every format: 4 per repeat
    ([True, False, False, False], 1),  # one correct: no *CC
    ([True, True, True, True, True], 1),  # no incorrect: no *C*IC
    ([False, False, False, False], 2),  # no correct: nothing
    ([True, True, False], 2),  # fewer than N = 4 usable samples: nothing
    ([True, True, False, False, True], 0),  # every reflection dropped: nothing
]


def stage1_records() -> list[dict[str, Any]]:
    """The hand-made set as stage 1 writes `samples.jsonl`: graded, reflections as text."""
    lines = []
    for number, (correctness, kept) in enumerate(HAND_MADE):
        item = problem(correctness, pid=f"q{number}", kept=kept)
        samples = [
            {
                "text": s.text,
                "prompt_variant": s.prompt_variant,
                "correct": s.correct,
                "reflections": [{"text": r.text} for r in s.reflections],
            }
            for s in item.samples
        ]
        lines.append({**item.problem.to_record(), "samples": samples})
    return lines


@pytest.mark.parametrize("repeats", [1, 3])
def test_the_default_set_rebuilds_a_hand_made_stage1_set_with_counts_per_format(
    repeats: int,
) -> None:
    items = [parse_samples_record(r, n) for n, r in enumerate(stage1_records(), 1)]
    options = ComposeOptions("released-default", 5, 4, repeats_per_question=repeats)
    summary = options.new_summary()
    out = list(compose(items, options, summary))
    per_format = Counter(record["meta"]["variant"] for record in out)
    assert per_format == {
        "released-0c": 3 * repeats,
        "released-c": 3 * repeats,
        "released-c-ic": 2 * repeats,
        "released-cc": 2 * repeats,
    }
    per_problem = Counter(record["meta"]["problem_id"] for record in out)
    assert per_problem == {"q0": 4 * repeats, "q1": 3 * repeats, "q2": 3 * repeats}
    assert summary.traces_out == len(out) and summary.problems_without_trace == 3


@pytest.mark.parametrize("variant", RELEASED)
def test_same_seed_same_records_other_seed_other_records(variant: str) -> None:
    items = [problem(MIXED, pid=f"p{i}") for i in range(3)]

    def run(seed: int) -> list[dict[str, Any]]:
        options = ComposeOptions(variant, seed)
        return list(compose(items, options, options.new_summary()))

    assert run(4) == run(4)
    assert run(4) != run(5)
