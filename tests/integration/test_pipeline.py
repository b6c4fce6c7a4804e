"""`skillfactory run` end to end on the tiny model: data → sft → grpo → eval, baselines, reuse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from skillfactory.cli import app
from skillfactory.runspec import parse_run_spec
from skillfactory.stages.pipeline import effective_spec, stages_to_run

CHATS = [
    {
        "messages": [
            {"role": "user", "content": f"Using the numbers [{a}, {b}], create an equation."},
            {
                "role": "assistant",
                "content": f"<think>\n<sample>\n{a}*{b}\n<answer>{a} * {b}</answer>\n</sample>\n"
                f"<reflect>\n<verdict>Incorrect</verdict>\n</reflect>\n<sample>\n{a}+{b}\n"
                f"<answer>{a} + {b}</answer>\n</sample>\n<reflect>\n<verdict>Correct</verdict>\n"
                f"</reflect>\n</think>\n<answer>{a} + {b}</answer>",
            },
        ]
    }
    for a, b in [(2, 3), (4, 5), (6, 1)]
]


def tiny_spec(model: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    """Every stage at toy sizes; SFT reads hand-written chats (a random model composes none)."""
    chats = out / "chats.jsonl"
    chats.parent.mkdir(parents=True, exist_ok=True)
    chats.write_text("".join(json.dumps(c) + "\n" for c in CHATS))
    spec: dict[str, Any] = {
        "name": "tiny",
        "model": str(model),
        "output_dir": str(out),
        "engine": {"type": "transformers", "max_batch_size": 64},
        "data": {
            "task": "countdown-3",
            "num_problems": 2,
            "samples_per_variant": 1,
            "reflections_per_sample": 1,
            "sampling": {"max_tokens": 12},
            "reflection_sampling": {"max_tokens": 8},
        },
        "sft": {"dataset": str(chats), "num_epochs": 1, "learning_rate": 1e-3, "max_length": 256},
        "grpo": {
            "num_problems": 10,
            "steps": 3,
            "group_size": 4,
            "prompts_per_step": 2,
            "mini_batch_size": 2,
            "learning_rate": 1e-3,
            "max_response_length": 12,
            "save_steps": 2,
        },
        "eval": {
            "tasks": ["countdown-3", "countdown-4"],
            "num_problems": 2,
            "samples_per_problem": 2,
            "max_tokens": 12,
        },
    }
    spec.update(overrides)
    return spec


def run_cli(spec: dict[str, Any], path: Path) -> Any:
    path.write_text(yaml.safe_dump(spec))
    return CliRunner().invoke(app, ["run", str(path)])


def test_run_chains_every_stage_and_prints_the_comparison(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = run_cli(tiny_spec(tiny_model_dir, tmp_path), tmp_path / "spec.yaml")
    assert result.exit_code == 0, result.output
    run = tmp_path / "tiny"
    assert json.loads((run / "data" / "summary.json").read_text())["samples"] == 2 * 4
    assert (run / "sft" / "model" / "config.json").exists()
    steps = (run / "grpo" / "steps.jsonl").read_text().splitlines()
    assert [json.loads(s)["version"] for s in steps] == [1, 2, 3]
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert set(summary) == {"base", "sft", "grpo"}
    assert set(summary["grpo"]["tasks"]) == {"countdown-3", "countdown-4"}
    for label in ("base", "SFT", "SFT→GRPO"):
        assert label in result.output
    record = json.loads((run / "run.json").read_text())
    assert set(record["seconds"]) == {"data", "sft", "grpo", "eval"}
    assert record["models"]["grpo"].endswith("grpo/model")

    again = run_cli(tiny_spec(tiny_model_dir, tmp_path), tmp_path / "spec.yaml")
    assert again.exit_code == 0, again.output
    reran = json.loads((run / "run.json").read_text())["results"]
    assert reran["sft"]["reused"] and reran["grpo"]["reused"]
    assert len((run / "grpo" / "steps.jsonl").read_text().splitlines()) == 3


def test_rl_only_runs_grpo_from_the_base_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = tiny_spec(tiny_model_dir, tmp_path, baseline="rl-only")
    result = run_cli(spec, tmp_path / "spec.yaml")
    assert result.exit_code == 0, result.output
    run = tmp_path / "tiny"
    assert not (run / "data").exists() and not (run / "sft").exists()
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert set(summary) == {"base", "grpo"}
    assert "SFT→GRPO" not in result.output and "rl-only GRPO" in result.output


def test_baselines_change_the_chain() -> None:
    star = effective_spec(parse_run_spec({"baseline": "star"}))
    assert star.data.composition == "star"
    assert stages_to_run(star) == ["data", "sft", "grpo", "eval"]
    assert stages_to_run(parse_run_spec({"baseline": "rl-only"})) == ["grpo", "eval"]
    assert stages_to_run(parse_run_spec({"baseline": "distill"})) == ["sft", "grpo", "eval"]
    plain = parse_run_spec({"stages": ["data", "sft"]})
    assert effective_spec(plain) == plain and stages_to_run(plain) == ["data", "sft"]


def test_an_sft_stage_without_traces_fails_with_a_clear_message(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    spec = tiny_spec(tiny_model_dir, tmp_path, stages=["data", "sft"])
    spec["sft"].pop("dataset")  # stage 1 of a random model composes no trace
    result = run_cli(spec, tmp_path / "spec.yaml")
    assert result.exit_code == 1
    assert "no silver trace" in result.output


@pytest.mark.parametrize("field", ["grpo.max_staleness", "sft.num_epochs"])
def test_a_bad_spec_is_refused_naming_the_field(
    tiny_model_dir: Path, tmp_path: Path, field: str
) -> None:
    spec = tiny_spec(tiny_model_dir, tmp_path)
    section, key = field.split(".")
    spec[section][key] = -1
    result = run_cli(spec, tmp_path / "spec.yaml")
    assert result.exit_code == 2
    assert field in result.output
