"""Skill metrics on hand-made traces, with every number computed by hand."""

from __future__ import annotations

import pytest

from skillfactory.eval import (
    VerdictOutcome,
    aggregate,
    length_stats,
    percentile,
    response_metrics,
    skill_metrics,
    task_check,
    verdict_outcomes,
    verdict_scores,
)
from skillfactory.tasks.base import Problem


def is_42(answer: str) -> bool:
    return answer.strip() == "42"


# Sample 1 wrong, judged Incorrect (right); sample 2 right, judged Correct (right).
TRACE_A = """<think>
<sample> 6*7 = 41 <answer>41</answer> </sample>
<reflect> 6*7 is not 41. <verdict>Incorrect</verdict> </reflect>
Let me try again.
<sample> 6*7 = 42 <answer>42</answer> </sample>
<reflect> Checks out. <verdict>Correct</verdict> </reflect>
</think>

So the final answer is:

<answer>42</answer>"""

# Sample 1 wrong but judged Correct (false "correct"); sample 2 right, judged Incorrect;
# sample 3 right, reflection with no verdict; sample 4 has no reflection. Final answer wrong.
TRACE_B = """<think>
<sample> <answer>40</answer> </sample>
<reflect> fine <verdict>Correct</verdict> </reflect>
<sample> <answer>42</answer> </sample>
<reflect> hmm <verdict>Incorrect</verdict> </reflect>
<sample> <answer> 42 </answer> </sample>
<reflect> unsure </reflect>
<sample> no answer here </sample>
</think>
<answer>40</answer>"""

PLAIN = "The product is <answer>42</answer>"


def test_verdict_outcomes_pair_each_reflection_with_the_sample_before_it() -> None:
    assert verdict_outcomes(TRACE_A, is_42) == [
        VerdictOutcome(False, False),
        VerdictOutcome(True, True),
    ]
    assert verdict_outcomes(TRACE_B, is_42) == [
        VerdictOutcome(True, False),
        VerdictOutcome(False, True),
        VerdictOutcome(None, True),
    ]
    assert verdict_outcomes(PLAIN, is_42) == []


def test_verdict_scores_by_hand() -> None:
    outcomes = verdict_outcomes(TRACE_A, is_42) + verdict_outcomes(TRACE_B, is_42)
    scores = verdict_scores(outcomes)
    # "correct": predicted correct twice (1 right, 1 wrong); 3 truly-correct samples, 1 found.
    correct = scores["correct"]
    assert (correct.true_positives, correct.false_positives, correct.false_negatives) == (1, 1, 2)
    assert correct.precision == pytest.approx(1 / 2)
    assert correct.recall == pytest.approx(1 / 3)
    assert correct.f1 == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    # "incorrect": predicted twice (1 right, 1 wrong); 2 truly-incorrect samples, 1 found.
    incorrect = scores["incorrect"]
    assert (incorrect.true_positives, incorrect.false_positives) == (1, 1)
    assert incorrect.false_negatives == 1
    assert incorrect.precision == pytest.approx(0.5)
    assert incorrect.recall == pytest.approx(0.5)
    assert incorrect.f1 == pytest.approx(0.5)


def test_no_predictions_give_zero_scores() -> None:
    scores = verdict_scores([])
    assert scores["correct"].precision == 0.0 and scores["incorrect"].f1 == 0.0


def test_response_metrics_count_answers_and_reflections() -> None:
    a = response_metrics(TRACE_A, is_42, count_tokens=lambda text: len(text.split()))
    assert (a.correct, a.n_answers, a.n_reflections, a.chars) == (True, 3, 2, len(TRACE_A))
    assert a.tokens == len(TRACE_A.split())
    b = response_metrics(TRACE_B, is_42)
    assert (b.correct, b.n_answers, b.n_reflections, b.tokens) == (False, 4, 3, None)
    assert response_metrics("nothing", is_42).correct is False


def test_aggregate_over_responses() -> None:
    metrics = skill_metrics([(TRACE_A, is_42), (TRACE_B, is_42), (PLAIN, is_42)])
    assert metrics.n_responses == 3
    assert metrics.accuracy == pytest.approx(2 / 3)
    assert metrics.mean_answers == pytest.approx((3 + 4 + 1) / 3)
    assert metrics.mean_reflections == pytest.approx((2 + 3 + 0) / 3)
    assert metrics.reflect_share == pytest.approx(2 / 3)  # PLAIN has no reflection
    assert metrics.n_verdicts == 5
    assert metrics.verdict["incorrect"].f1 == pytest.approx(0.5)
    assert metrics.chars.max == max(len(TRACE_A), len(TRACE_B), len(PLAIN))
    assert metrics.tokens is None
    assert metrics.to_dict()["verdict"]["correct"]["tp"] == 1  # type: ignore[index]


def test_tokens_only_when_every_response_has_them() -> None:
    with_tokens = skill_metrics([(PLAIN, is_42), (TRACE_A, is_42)], count_tokens=len)
    assert with_tokens.tokens is not None
    assert with_tokens.tokens.max == len(TRACE_A)
    assert aggregate([]).accuracy == 0.0 and aggregate([]).chars.count == 0


def test_length_stats_by_hand() -> None:
    stats = length_stats([10, 20, 30, 40, 50, 60, 70, 80, 90, 1000])
    assert stats.count == 10
    assert stats.mean == pytest.approx(145.0)
    assert stats.median == pytest.approx(55.0)
    assert stats.p90 == 90.0  # nearest rank: the 9th of 10
    assert stats.max == 1000.0
    assert percentile([5], 90) == 5.0
    assert percentile([1, 2, 3, 4], 50) == 2.0
    with pytest.raises(ValueError):
        percentile([], 50)


class Multiplication:
    name = "multiplication-2"

    def check(self, problem: Problem, answer: str) -> bool:
        if answer == "boom":
            raise RuntimeError("grader bug")
        return int(answer) == problem.data["a"] * problem.data["b"]


def test_task_check_uses_the_grader_and_never_raises_on_model_text() -> None:
    problem = Problem("1", "multiplication-2", "6*7?", "42", {"a": 6, "b": 7})
    check = task_check(Multiplication(), problem)  # type: ignore[arg-type]
    assert check("42") is True
    assert check("41") is False
    assert check("forty-two") is False  # int() raises ValueError: wrong, not a crash
    assert check("boom") is False
    assert response_metrics(TRACE_A, check).correct is True


def test_a_reflection_counts_for_the_share_only_with_a_verdict_inside() -> None:
    with_verdict = "<reflect>fine <verdict>Correct</verdict></reflect>"
    without = "<reflect>looks fine</reflect> <verdict>Correct</verdict>"
    assert response_metrics(with_verdict, is_42).reflects is True
    assert response_metrics(without, is_42).reflects is False
    assert response_metrics("<verdict>Correct</verdict>", is_42).reflects is False
