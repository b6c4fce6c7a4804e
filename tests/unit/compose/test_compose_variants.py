"""Each named variant's defining property, and the composer's determinism."""

from __future__ import annotations

import pytest

from skillfactory.compose import (
    VARIANTS,
    ComposeOptions,
    ProblemSamples,
    Reflection,
    Sample,
    Trace,
    UnknownVariantError,
    compose_problem,
    compose_traces,
    get_variant,
)
from skillfactory.parsing import count_reflections, extract_answer, find_blocks, think_and_after
from skillfactory.prompts import SOLVE_VARIANTS
from skillfactory.tasks.base import Problem

CORRECT = Reflection("Looks right. <verdict>Correct</verdict>", True)
INCORRECT = Reflection("Step 1 is off. <verdict>Incorrect</verdict>", False)


def rich_problem(n: int = 64, pid: str = "p0") -> ProblemSamples:
    """n samples across the four solve variants, a third correct, two kept reflections each."""
    samples = []
    for i in range(n):
        correct = i % 3 == 0
        answer = "42" if correct else str(100 + i)
        verdict = CORRECT if correct else INCORRECT
        wrong = INCORRECT if correct else CORRECT
        variant = SOLVE_VARIANTS[i % len(SOLVE_VARIANTS)]
        text = f"Attempt {i} in {variant}.\n<answer>{answer}</answer>"
        samples.append(Sample(i, text, variant, correct, (verdict, wrong, verdict)))
    return ProblemSamples(Problem(pid, "multiplication-2", "What is 6 * 7?", "42"), tuple(samples))


def traces(
    variant: str, seed: int = 0, max_len: int = 5, item: ProblemSamples | None = None
) -> list[Trace]:
    return compose_traces(item or rich_problem(), ComposeOptions(variant, seed, max_len)).traces


def test_every_variant_is_registered() -> None:
    assert set(VARIANTS) == {
        "skillfactory",
        "no-sample-order",
        "no-reflection",
        "no-prompt-diversity",
        "star",
        "fixed-length",
        "released-random",
        "released-no-reflection",
        "released-0c",
        "released-c",
        "released-c-full",
        "released-c-ic",
        "released-cc",
        "released-default",
    }
    with pytest.raises(UnknownVariantError, match="allowed: skillfactory"):
        get_variant("nope")


def test_no_sample_order_does_not_force_a_correct_last_sample() -> None:
    ends = [t.pairs[-1].correct for seed in range(10) for t in traces("no-sample-order", seed)]
    assert not all(ends) and any(ends)
    for seed in range(10):
        keys = [p.key for t in traces("no-sample-order", seed) for p in t.pairs]
        assert len(keys) == len(set(keys))
        assert all(t.n_incorrect < t.n_correct for t in traces("no-sample-order", seed))


def test_no_sample_order_states_the_last_samples_answer() -> None:
    item = rich_problem()
    for record in compose_problem(item, ComposeOptions("no-sample-order", 1)):
        text = record["messages"][1]["content"]
        think, _ = think_and_after(text)
        assert think is not None
        last_sample = find_blocks(think, "sample")[-1].text
        assert extract_answer(text) == extract_answer(last_sample)


def test_no_reflection_shows_samples_only_each_once() -> None:
    item = rich_problem()
    records = compose_problem(item, ComposeOptions("no-reflection", 0))
    assert records
    for record in records:
        assert count_reflections(record["messages"][1]["content"]) == 0
        assert "verdict" not in record["messages"][1]["content"]
    indices = [i for r in records for i in r["meta"]["sample_indices"]]
    assert len(indices) == len(set(indices))
    correct = {s.index for s in item.samples if s.correct}
    assert correct <= set(indices), "every correct sample used"


def test_no_prompt_diversity_uses_one_solve_variant() -> None:
    found = {p.sample.prompt_variant for t in traces("no-prompt-diversity") for p in t.pairs}
    assert found == {"step_by_step"}
    assert len({p.sample.prompt_variant for t in traces("skillfactory") for p in t.pairs}) == 4


def test_star_is_one_correct_sample_per_trace_without_reflection() -> None:
    item = rich_problem()
    records = compose_problem(item, ComposeOptions("star", 0))
    correct = [s for s in item.samples if s.correct]
    assert len(records) == len(correct)
    for record, sample in zip(records, correct, strict=True):
        text = record["messages"][1]["content"]
        assert text == sample.text
        assert record["meta"]["n_correct"] == 1 and record["meta"]["n_incorrect"] == 0
        assert count_reflections(text) == 0


def test_fixed_length_gives_one_trace_per_length_ending_correct() -> None:
    for seed in range(5):
        found = traces("fixed-length", seed, 4)
        assert [len(t.pairs) for t in found] == [1, 2, 3, 4]
        assert all(t.pairs[-1].correct and t.n_incorrect < t.n_correct for t in found)
        keys = [p.key for t in found for p in t.pairs]
        assert len(keys) == len(set(keys))


def test_fixed_length_skips_lengths_it_cannot_fill() -> None:
    few = rich_problem(n=4)  # samples 0 and 3 correct; 1 and 2 incorrect; 3 reflections each
    found = traces("fixed-length", 0, 5, few)
    assert all(len(t.pairs) <= 3 for t in found)  # at most 2 correct samples, 1 failure
    assert len({len(t.pairs) for t in found}) == len(found)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_composing_is_deterministic_and_order_independent(variant: str) -> None:
    items = [rich_problem(16, f"p{i}") for i in range(3)]
    options = ComposeOptions(variant, 11)
    forward = [compose_problem(item, options) for item in items]
    backward = [compose_problem(item, options) for item in reversed(items)][::-1]
    assert forward == backward
    other = [compose_problem(item, ComposeOptions(variant, 12)) for item in items]
    if variant != "star":  # star has no random choice
        assert forward != other


def test_problem_without_a_correct_sample_yields_nothing_and_is_counted() -> None:
    item = rich_problem()
    wrong = tuple(
        Sample(s.index, s.text, s.prompt_variant, False, (INCORRECT,)) for s in item.samples
    )
    options = ComposeOptions()
    summary = options.new_summary()
    assert compose_problem(ProblemSamples(item.problem, wrong), options, summary) == []
    assert summary.problems_without_correct == 1 and summary.problems_without_trace == 1
    assert summary.to_dict()["verdict_filter"]["incorrect"]["kept"] == len(wrong)


def test_records_are_chats_with_the_question_and_meta() -> None:
    item = rich_problem()
    records = compose_problem(item, ComposeOptions("skillfactory", 0))
    assert [r["id"] for r in records] == [f"p0/{i}" for i in range(len(records))]
    for record in records:
        user, assistant = record["messages"]
        assert user == {"role": "user", "content": "What is 6 * 7?"}
        assert assistant["role"] == "assistant"
        meta = record["meta"]
        assert meta["variant"] == "skillfactory"
        assert meta["n_correct"] + meta["n_incorrect"] == meta["n_samples"]
        assert count_reflections(assistant["content"]) == meta["n_samples"]
        assert extract_answer(assistant["content"]) == "42"


def test_max_samples_per_trace_is_validated() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ComposeOptions(max_samples_per_trace=0)
    assert max(len(t.pairs) for t in traces("skillfactory", 0, 1)) == 1
