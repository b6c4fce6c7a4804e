"""Run-spec schema: defaults from the paper, documented fields, clear errors naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from skillfactory.runspec import (
    InvalidRunSpec,
    RunSpec,
    Spec,
    dump_run_spec,
    load_run_spec,
    parse_run_spec,
)

REPO = Path(__file__).resolve().parents[2]
EVERY_FIELD = REPO / "tests" / "fixtures" / "every-field-set.yaml"


def _spec_classes() -> list[type[Spec]]:
    seen: list[type[Spec]] = []
    pending: list[type[Spec]] = [RunSpec]
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.append(cls)
        for info in cls.model_fields.values():
            for arg in [info.annotation, *getattr(info.annotation, "__args__", ())]:
                if isinstance(arg, type) and issubclass(arg, Spec):
                    pending.append(arg)
    return seen


def test_every_spec_class_is_reachable_and_every_field_documented() -> None:
    classes = _spec_classes()
    assert {c.__name__ for c in classes} >= {
        "RunSpec",
        "DataSpec",
        "SFTSpec",
        "GRPOSpec",
        "EvalSpec",
        "SamplingSpec",
        "TransformersEngineSpec",
        "VllmEngineSpec",
        "InProcessQueueSpec",
        "RedisQueueSpec",
        "BudgetForcingSpec",
    }
    undocumented = [
        f"{cls.__name__}.{name}"
        for cls in classes
        for name, info in cls.model_fields.items()
        if not (info.description or "").strip()
    ]
    assert undocumented == []


def test_paper_defaults() -> None:
    spec = RunSpec()
    assert spec.data.samples_per_variant * len(spec.data.prompt_variants) == 64
    assert spec.data.reflections_per_sample == 4
    assert spec.data.max_samples_per_trace == 5
    sampling = spec.data.sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k) == (0.7, 0.8, 20)
    assert sampling.repetition_penalty == 1.1
    assert (spec.sft.learning_rate, spec.sft.lr_scheduler, spec.sft.warmup_ratio) == (
        1e-6,
        "cosine",
        0.05,
    )
    assert (spec.sft.num_epochs, spec.sft.max_length, spec.sft.per_device_batch_size) == (
        2,
        4096,
        1,
    )
    grpo = spec.grpo
    assert (grpo.group_size, grpo.prompts_per_step, grpo.mini_batch_size) == (16, 256, 32)
    assert (grpo.learning_rate, grpo.clip_eps_low, grpo.steps) == (1e-6, 0.2, 150)
    assert (grpo.loss, grpo.kl_beta, grpo.temperature) == ("token-mean", 0.0, 1.0)
    assert (grpo.max_prompt_length, grpo.max_response_length) == (512, 4096)
    assert (spec.eval.samples_per_problem, spec.eval.max_tokens) == (4, 16384)


def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


def test_fixture_sets_every_field_to_a_non_default() -> None:
    spec = load_run_spec(EVERY_FIELD)
    ours = _leaves(spec.model_dump(mode="json"))
    defaults = _leaves(
        RunSpec(engine={"type": "vllm"}, queue={"type": "redis"}).model_dump(mode="json")  # type: ignore[arg-type]
    )
    assert set(ours) == set(defaults)
    same = sorted(path for path in ours if ours[path] == defaults[path])
    assert same == ["engine.type", "queue.type"]


def test_yaml_dump_round_trip() -> None:
    spec = load_run_spec(EVERY_FIELD)
    assert parse_run_spec(yaml.safe_load(dump_run_spec(spec))) == spec


def _problem_paths(data: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidRunSpec) as caught:
        parse_run_spec(data)
    return [p.path for p in caught.value.problems]


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"modle": "x"}, "modle"),
        ({"data": {"sampling": {"temprature": 1}}}, "data.sampling.temprature"),
        ({"data": {"sampling": {"temperature": -1}}}, "data.sampling.temperature"),
        ({"grpo": {"loss": "l2"}}, "grpo.loss"),
        ({"grpo": {"group_size": 1}}, "grpo.group_size"),
        ({"engine": {"type": "vllm", "kv_cache_gb": 1}}, "engine.kv_cache_gb"),
        ({"engine": {"type": "onnx"}}, "engine"),
        ({"queue": {"type": "redis", "max_len": 0}}, "queue.max_len"),
        ({"stages": ["grpo", "data"]}, "<root>"),
        (
            {"eval": {"budget_forcing": {"first_budget": 10, "total_budget": 5}}},
            "eval.budget_forcing",
        ),
        ({"name": "has space"}, "name"),
    ],
)
def test_invalid_specs_name_the_field(data: dict[str, Any], path: str) -> None:
    assert _problem_paths(data) == [path]


def test_unknown_field_lists_allowed_fields() -> None:
    with pytest.raises(InvalidRunSpec) as caught:
        parse_run_spec({"engine": {"type": "vllm", "kv_cache_gb": 1}})
    (problem,) = caught.value.problems
    assert "kv_cache_gib" in problem.message and problem.value == 1


def test_every_problem_is_reported_not_just_the_first() -> None:
    paths = _problem_paths({"seed": "x", "grpo": {"steps": 0}, "bogus": 1})
    assert sorted(paths) == ["bogus", "grpo.steps", "seed"]


def test_yaml_syntax_error_is_a_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InvalidRunSpec) as caught:
        load_run_spec(bad)
    assert caught.value.problems[0].path == "<yaml>"


def test_shipped_examples_validate() -> None:
    examples = sorted((REPO / "examples").glob("**/*.yaml"))
    assert examples, "examples/ holds run specs"
    for example in examples:
        if "variants" in (yaml.safe_load(example.read_text()) or {}):
            continue  # an ablation suite (tests/unit/test_ablation.py expands and checks it)
        assert isinstance(load_run_spec(example), BaseModel), example


def test_paper_ablation_and_baseline_specs_differ_from_the_paper_setup_in_one_choice() -> None:
    paper = load_run_spec(REPO / "examples" / "paper-countdown.yaml").model_dump()
    variants = sorted((REPO / "examples" / "paper").glob("countdown-*.yaml"))
    assert len(variants) == 6
    for path in variants:
        spec = load_run_spec(path).model_dump()
        changed = {k for k in paper if k != "name" and spec[k] != paper[k]}
        assert changed in ({"data"}, {"baseline"}), (path.name, changed)
        if changed == {"data"}:
            assert {k for k in paper["data"] if spec["data"][k] != paper["data"][k]} == {
                "composition"
            }
