"""Run-spec fields of issue 17 items 3, 8 and 9: vLLM engine options, eval during GRPO and
tracking, each validated with an error naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from skillfactory.runspec import InvalidRunSpec, RunSpec, parse_run_spec


def _problem_paths(data: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidRunSpec) as caught:
        parse_run_spec(data)
    return [problem.path for problem in caught.value.problems]


def _vllm(**fields: Any) -> dict[str, Any]:
    return {"engine": {"type": "vllm", **fields}}


def test_vllm_option_defaults() -> None:
    engine = parse_run_spec(_vllm()).engine
    assert engine.type == "vllm"
    assert engine.tensor_parallel_size == 1
    assert engine.gpu_memory_utilization == 0.85
    assert engine.enable_prefix_caching is True
    assert engine.enable_sleep_mode is False


@pytest.mark.parametrize("size", [0, -1])
def test_tensor_parallel_size_is_at_least_one(size: int) -> None:
    assert _problem_paths(_vllm(tensor_parallel_size=size)) == ["engine.tensor_parallel_size"]


def test_tensor_parallel_size_accepts_several_gpus() -> None:
    assert parse_run_spec(_vllm(tensor_parallel_size=4)).engine.tensor_parallel_size == 4


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01, 2])
def test_gpu_memory_utilization_is_a_fraction(fraction: float) -> None:
    assert _problem_paths(_vllm(gpu_memory_utilization=fraction)) == [
        "engine.gpu_memory_utilization"
    ]


def test_enable_prefix_caching_is_a_bool() -> None:
    assert _problem_paths(_vllm(enable_prefix_caching="sometimes")) == [
        "engine.enable_prefix_caching"
    ]
    assert parse_run_spec(_vllm(enable_prefix_caching=False)).engine.enable_prefix_caching is False


def test_enable_sleep_mode_is_a_bool() -> None:
    assert _problem_paths(_vllm(enable_sleep_mode="yes please")) == ["engine.enable_sleep_mode"]
    assert parse_run_spec(_vllm(enable_sleep_mode=True)).engine.enable_sleep_mode is True


@pytest.mark.parametrize("engine", ["transformers", "simulated"])
@pytest.mark.parametrize(
    "field", ["enable_sleep_mode", "tensor_parallel_size", "enable_prefix_caching"]
)
def test_vllm_options_belong_to_the_vllm_engine_only(engine: str, field: str) -> None:
    value: Any = 2 if field == "tensor_parallel_size" else True
    with pytest.raises(InvalidRunSpec) as caught:
        parse_run_spec({"engine": {"type": engine, field: value}})
    (problem,) = caught.value.problems
    assert problem.path == f"engine.{field}"
    assert "unknown field" in problem.message


def test_eval_during_training_defaults_off() -> None:
    grpo = RunSpec().grpo
    assert grpo.eval_every == 0
    assert grpo.eval_problems >= 1


def test_eval_every_and_eval_problems_are_checked() -> None:
    assert _problem_paths({"grpo": {"eval_every": -1}}) == ["grpo.eval_every"]
    assert _problem_paths({"grpo": {"eval_problems": 0}}) == ["grpo.eval_problems"]
    grpo = parse_run_spec({"grpo": {"eval_every": 5, "eval_problems": 20}}).grpo
    assert (grpo.eval_every, grpo.eval_problems) == (5, 20)


def test_tracking_defaults_to_none() -> None:
    tracking = RunSpec().tracking
    assert tracking.backend == "none"
    assert tracking.run_name is None
    assert tracking.completions_every == 10


def test_tracking_fields_are_checked() -> None:
    assert _problem_paths({"tracking": {"backend": "tensorboard"}}) == ["tracking.backend"]
    assert _problem_paths({"tracking": {"completions_every": -2}}) == ["tracking.completions_every"]
    assert _problem_paths({"tracking": {"max_completions": 0}}) == ["tracking.max_completions"]
    assert _problem_paths({"tracking": {"project": ""}}) == ["tracking.project"]
    with pytest.raises(InvalidRunSpec, match="allowed: backend, project"):
        parse_run_spec({"tracking": {"report_to": "wandb"}})
    tracking = parse_run_spec(
        {"tracking": {"backend": "trackio", "project": "p", "run_name": "r"}}
    ).tracking
    assert (tracking.backend, tracking.project, tracking.run_name) == ("trackio", "p", "r")
