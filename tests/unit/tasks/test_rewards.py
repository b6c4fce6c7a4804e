"""GRPO reward terms (`grpo.rewards`, `skillfactory.tasks.rewards`): built-ins, weights, plugins
(raising, timing out, not allowed), and the reward service's scoring, metrics and refusal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from skillfactory.engines.base import Completion
from skillfactory.group import reward_term_failures, reward_term_means
from skillfactory.rollout.sampler import make_group
from skillfactory.rollout.scoring import local_scorer
from skillfactory.runspec import InvalidRunSpec, parse_run_spec
from skillfactory.serving.reward import RewardMetrics, score
from skillfactory.serving.run_policy import RunPolicy, admit
from skillfactory.tasks import rewards
from skillfactory.tasks.base import Problem
from skillfactory.tasks.bounded_check import BoundedRunner
from skillfactory.tasks.rewards import (
    REWARDS_KEY,
    format_reward,
    length_reward,
    reward_terms,
    score_group,
    with_terms,
)
from skillfactory.v1 import reward_pb2
from skillfactory.wire.messages import group_from_proto, group_to_proto, problem_to_proto

PLUGINS = "integration.own_rewards"
PROBLEM = Problem("p1", "gsm8k", "What is 2 + 3?", "5")


def terms(*pairs: tuple[str, float]) -> Problem:
    return with_terms(PROBLEM, list(pairs), max_tokens=100)


@pytest.fixture
def quick_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    runner = BoundedRunner("reward-plugins-test", timeout_s=1.5, max_workers=1)
    monkeypatch.setattr(rewards, "_PLUGIN_RUNNER", runner)
    yield
    runner.close()


def test_correctness_alone_is_the_default() -> None:
    assert reward_terms(PROBLEM) == [("correctness", 1.0)]
    assert with_terms(PROBLEM, [("correctness", 1.0)], 100) is PROBLEM  # nothing added
    right, wrong = score_group(PROBLEM, ["<answer>5</answer>", "<answer>6</answer>"])
    assert (right.value, right.correct, right.answer, right.terms) == (
        1.0,
        True,
        "5",
        {"correctness": 1.0},
    )
    assert (wrong.value, wrong.correct, wrong.failed) == (0.0, False, ())


def test_format_rewards_present_balanced_unnested_tags() -> None:
    assert format_reward("so <answer>5</answer>") == 1.0
    assert format_reward("<answer>4</answer> then <answer>5</answer>") == 1.0
    assert format_reward("no tags") == 0.0
    assert format_reward("<answer>5") == 0.0
    assert format_reward("5</answer>") == 0.0
    assert format_reward("<answer><answer>5</answer></answer>") == 0.0
    assert format_reward("<answer>  </answer>") == 0.0


def test_length_rewards_brevity_within_the_budget() -> None:
    assert length_reward(0, 100) == 1.0
    assert length_reward(25, 100) == 0.75
    assert length_reward(250, 100) == 0.0
    assert length_reward(10, None) == 1.0


def test_terms_are_weighted_and_summed() -> None:
    problem = terms(("correctness", 1.0), ("format", 0.5), ("length", 0.2))
    assert problem.data[REWARDS_KEY][1] == {"name": "format", "weight": 0.5}
    (scored,) = score_group(problem, ["<answer>5</answer>"], [40])
    assert scored.terms == {"correctness": 1.0, "format": 1.0, "length": 0.6}
    assert scored.value == pytest.approx(1.0 + 0.5 + 0.2 * 0.6)


def test_a_plugin_runs_in_a_worker_with_the_problem(quick_plugins: None) -> None:
    problem = terms(("correctness", 1.0), (f"{PLUGINS}:echo_gold", 2.0))
    right, wrong = score_group(problem, ["5 <answer>5</answer>", "nope"], allow_plugins=True)
    assert right.terms[f"{PLUGINS}:echo_gold"] == 1.0 and right.value == 3.0
    assert wrong.terms[f"{PLUGINS}:echo_gold"] == 0.0 and wrong.failed == ()


@pytest.mark.parametrize("plugin", ["broken", "not_a_number", "slow"])
def test_a_plugin_that_raises_or_times_out_scores_0_and_is_counted(
    quick_plugins: None, plugin: str
) -> None:
    name = f"{PLUGINS}:{plugin}"
    problem = terms(("correctness", 1.0), (name, 1.0))
    (scored,) = score_group(problem, ["<answer>5</answer>"], allow_plugins=True)
    assert scored.terms == {"correctness": 1.0, name: 0.0}
    assert scored.failed == (name,) and scored.value == 1.0


def test_a_plugin_not_allowed_is_never_imported() -> None:
    name = "no_such_module_anywhere:reward"
    (scored,) = score_group(terms((name, 1.0)), ["<answer>5</answer>"])
    assert scored.failed == (name,) and scored.value == 0.0


def test_the_reward_service_scores_terms_and_counts_them(quick_plugins: None) -> None:
    plugin = f"{PLUGINS}:broken"
    problem = problem_to_proto(terms(("correctness", 1.0), ("format", 0.5), (plugin, 1.0)))
    request = reward_pb2.ScoreRequest()
    request.groups.add(
        problem=problem, responses=["<answer>5</answer>", "<answer>4"], response_tokens=[3, 2]
    )
    registry = CollectorRegistry()
    first, second = score(request, RewardMetrics(registry)).rewards  # plugins not allowed
    assert (first.value, first.correct) == (1.5, True)
    assert dict(first.terms) == {"correctness": 1.0, "format": 1.0, plugin: 0.0}
    assert list(first.failed_terms) == [plugin] and second.value == 0.0

    def sample(name: str, reward: str) -> float | None:
        return registry.get_sample_value(f"skillfactory_reward_term_{name}", {"reward": reward})

    assert sample("value_sum_total", "format") == 1.0
    assert sample("values_total", "format") == 2.0
    assert sample("failures_total", plugin) == 2.0

    allowed = score(request, allow_plugins=True).rewards
    assert list(allowed[0].failed_terms) == [plugin]  # it raises: still 0, still counted


def test_the_learner_api_refuses_plugins_unless_allowed(tmp_path: Path) -> None:
    spec = parse_run_spec(
        {
            "output_dir": "runs",
            "model": "tiny",
            "grpo": {"rewards": [{"name": "correctness"}, {"name": "mypkg.rewards:brevity"}]},
            "datasets": [{"name": "mine", "path": "data/mine.jsonl"}],
        }
    )
    with pytest.raises(InvalidRunSpec, match=r"grpo\.rewards\.1\.name: .*--allow-reward-plugins"):
        admit(spec, RunPolicy(tmp_path), "r1")
    admitted = admit(spec, RunPolicy(tmp_path, allow_reward_plugins=True), "r1")
    assert admitted.datasets[0].path == str(tmp_path.resolve() / "data/mine.jsonl")
    outside = spec.model_copy(
        update={"datasets": [spec.datasets[0].model_copy(update={"path": "/etc/passwd"})]}
    )
    with pytest.raises(InvalidRunSpec, match=r"datasets\.0\.path: must lie inside"):
        admit(outside, RunPolicy(tmp_path, allow_reward_plugins=True), "r1")


def test_terms_travel_from_the_scorer_through_the_group_to_the_step_record() -> None:
    problem = terms(("correctness", 1.0), ("format", 0.5), ("nowhere:plugin", 1.0))
    completions = [
        Completion(text, [1, 2, 3], [-0.1] * 3, "stop", 0, [7])
        for text in ("<answer>5</answer>", "<answer>6")
    ]
    (values,) = local_scorer()([(problem, completions)])
    group = group_from_proto(
        group_to_proto(make_group(0, problem, completions, values, sampler_id="s"))
    )
    assert group.rewards == [1.5, 0.0]
    assert group.reward_terms[0] == {"correctness": 1.0, "format": 1.0, "nowhere:plugin": 0.0}
    assert reward_term_means([group]) == {"correctness": 0.5, "format": 0.5, "nowhere:plugin": 0.0}
    assert reward_term_failures([group]) == {"nowhere:plugin": 2}
