"""The verdict filter and how samples and reflections are cleaned before they enter a trace."""

from __future__ import annotations

from skillfactory.compose import Sample, reflection_from_text, verdict_filter
from skillfactory.compose.pair import reflection_critique, sample_body


def sample(index: int, text: str, correct: bool, *reflections: str) -> Sample:
    refl = tuple(reflection_from_text(r) for r in reflections)
    return Sample(index, text, "step_by_step", correct, refl)


def test_keeps_only_verdicts_that_match_and_counts_per_class() -> None:
    samples = [
        sample(
            0,
            "<answer>4</answer>",
            True,
            "fine <verdict>Correct</verdict>",
            "wrong call <verdict>Incorrect</verdict>",
            "no verdict at all",
            "<verdict>maybe</verdict>",
        ),
        sample(
            1,
            "<answer>5</answer>",
            False,
            "bad <verdict>incorrect</verdict>",
            "< VERDICT >Incorrect.</verdict>",
            "<verdict>Correct</verdict>",
            "I would write <answer>4</answer> <verdict>Incorrect</verdict>",
        ),
    ]
    result = verdict_filter(samples)
    assert [pair.key for pair in result.pairs] == [(0, 0), (1, 0), (1, 1)]
    c, i = result.counts.correct, result.counts.incorrect
    assert (c.kept, c.dropped_mismatch, c.dropped_no_verdict, c.dropped_malformed) == (1, 1, 2, 0)
    assert (i.kept, i.dropped_mismatch, i.dropped_no_verdict, i.dropped_malformed) == (2, 1, 0, 1)
    assert c.dropped == 3 and i.dropped == 2
    assert result.counts.unusable_samples == 0


def test_samples_without_answer_or_with_trace_tags_are_unusable() -> None:
    samples = [
        sample(0, "I ran out of tokens", False, "<verdict>Incorrect</verdict>"),
        sample(1, "<think>hmm</think><answer>3</answer>", True, "<verdict>Correct</verdict>"),
        sample(2, "<answer></answer>", False, "<verdict>Incorrect</verdict>"),
        sample(3, "<answer>3</answer>", True, "<verdict>Correct</verdict>"),
    ]
    result = verdict_filter(samples)
    assert result.counts.unusable_samples == 3
    assert [pair.key for pair in result.pairs] == [(3, 0)]
    assert result.counts.correct.kept == 1 and result.counts.incorrect.kept == 0


def test_sample_body_is_cut_after_the_last_answer() -> None:
    text = "Try <answer>1</answer> Alternatively, <answer>2</answer>\nHope this helps!"
    assert sample_body(text) == "Try <answer>1</answer> Alternatively, <answer>2</answer>"
    assert sample_body("so <answer>7") == "so <answer>7</answer>"


def test_reflection_critique_ends_in_a_canonical_verdict() -> None:
    critique = reflection_critique(
        reflection_from_text("Step 2 is wrong.\n<Verdict> incorrect </verdict> trailing chatter")
    )
    assert critique == "Step 2 is wrong.\n<verdict>Incorrect</verdict>"
    assert reflection_critique(reflection_from_text("<verdict>Correct")) == (
        "<verdict>Correct</verdict>"
    )
    assert reflection_critique(reflection_from_text("no verdict")) is None


def test_rationalization_samples_that_mention_the_hint_are_unusable() -> None:
    text = "Using the hint, 6 * 7 = 42. <answer>42</answer>"
    honest = "6 * 7 = 42. <answer>42</answer>"
    samples = [
        Sample(0, text, "hint_step_by_step", True, (reflection_from_text("<verdict>Correct"),)),
        Sample(1, honest, "hint_restate", True, (reflection_from_text("<verdict>Correct"),)),
        Sample(2, text, "step_by_step", True, (reflection_from_text("<verdict>Correct"),)),
    ]
    result = verdict_filter(samples)
    assert result.counts.unusable_samples == 1
    assert [pair.key for pair in result.pairs] == [(1, 0), (2, 0)]
