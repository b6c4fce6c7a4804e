"""`skillfactory run` of the paper's OpenThoughts spec on CPU: the packaged openthoughts sample
instead of the Hub, the tiny model instead of Qwen2.5-7B-Instruct, toy sizes.

Two runs. The first is the whole chain on the tiny model (data → sft → grpo → eval); a random
model composes no silver trace, so SFT reads hand-written chats as in test_pipeline. The second
samples stage 1 with the seeded text engine (a simulation that answers small numbers, as the
sample's boxed labels are), so that the rationalization prompts, the boxed-answer grader and the
verdict filter compose real silver traces from the sample, and SFT trains the tiny model on them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from skillfactory.cli import app

CHATS = [
    {
        "messages": [
            {"role": "user", "content": f"What is {a} + {b}?"},
            {
                "role": "assistant",
                "content": f"<think>\n<sample>\n<answer>{a * b}</answer>\n</sample>\n<reflect>\n"
                f"<verdict>Incorrect</verdict>\n</reflect>\n<sample>\n<answer>{a + b}</answer>\n"
                f"</sample>\n<reflect>\n<verdict>Correct</verdict>\n</reflect>\n</think>\n"
                f"<answer>{a + b}</answer>",
            },
        ]
    }
    for a, b in [(2, 3), (4, 5), (6, 1)]
]
"""Hand-written chats for the run whose random model composes no trace."""

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "examples" / "paper" / "openthoughts-1k.yaml"


def tiny_openthoughts_spec(model: Path, out: Path) -> dict[str, Any]:
    """The shipped spec with the offline sample, the tiny model and toy sizes."""
    spec: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    chats = out / "chats.jsonl"
    chats.parent.mkdir(parents=True, exist_ok=True)
    chats.write_text("".join(json.dumps(c) + "\n" for c in CHATS))
    spec["model"] = str(model)
    spec["output_dir"] = str(out)
    spec["engine"] = {"type": "transformers", "max_batch_size": 64}
    spec["data"].update(
        task="openthoughts",  # the packaged sample (openthoughts@hf reads the Hub)
        num_problems=4,
        sampling={"max_tokens": 12},
        reflection_sampling={"max_tokens": 8},
    )
    spec["sft"].update(
        dataset=str(chats),
        learning_rate=1e-3,
        max_length=256,
        num_epochs=1,
        precision="fp32",
        gradient_checkpointing=False,
        max_examples=2,
    )
    spec["grpo"].update(
        num_problems=4,
        steps=2,
        group_size=2,
        prompts_per_step=2,
        mini_batch_size=1,
        max_tokens_per_micro_batch=4096,
        max_prompt_length=256,
        max_response_length=8,
        learning_rate=1e-3,
        precision="fp32",
        gradient_checkpointing=False,
    )
    spec["eval"].update(
        tasks=["openthoughts"],
        num_problems=3,
        samples_per_problem=1,
        max_tokens=8,
        budget_forcing={"enabled": True, "first_budget": 4, "total_budget": 8},
    )
    return spec


def run_cli(spec: dict[str, Any], path: Path) -> Any:
    path.write_text(yaml.safe_dump(spec))
    return CliRunner().invoke(app, ["run", str(path)])


def test_the_openthoughts_spec_runs_every_stage_on_the_tiny_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    result = run_cli(tiny_openthoughts_spec(tiny_model_dir, tmp_path), tmp_path / "spec.yaml")
    assert result.exit_code == 0, result.output
    run = tmp_path / "paper-openthoughts-1k"
    summary = json.loads((run / "data" / "summary.json").read_text())
    # 4 problems × 8 variants (4 solve prompts and their hint-bearing twins) × 2 samples
    assert summary["samples"] == 4 * 8 * 2
    sft = json.loads((run / "sft" / "sft.json").read_text())
    assert sft["examples"] == 2  # sft.max_examples of the 3 hand-written chats
    steps = (run / "grpo" / "steps.jsonl").read_text().splitlines()
    assert [json.loads(s)["version"] for s in steps] == [1, 2]
    evaluated = json.loads((run / "eval" / "summary.json").read_text())
    assert set(evaluated) == {"base", "sft", "grpo"}
    for label in evaluated:
        assert "budget_forcing" in evaluated[label]["tasks"]["openthoughts"]


def test_stage1_composes_silver_traces_from_the_sample_and_sft_trains_on_them(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    spec = tiny_openthoughts_spec(tiny_model_dir, tmp_path)
    spec["stages"] = ["data", "sft", "eval"]
    spec["engine"] = {"type": "simulated"}  # SIMULATION: stage 1's and eval's text, not a model's
    spec["data"].update(
        num_problems=8, sampling={"max_tokens": 64}, reflection_sampling={"max_tokens": 64}
    )
    spec["sft"].pop("dataset")
    spec["sft"]["max_examples"] = 1000
    result = run_cli(spec, tmp_path / "spec.yaml")
    assert result.exit_code == 0, result.output
    run = tmp_path / "paper-openthoughts-1k"
    summary = json.loads((run / "data" / "summary.json").read_text())
    variants = set(summary["accuracy_per_prompt_variant"])
    assert {"step_by_step", "hint_step_by_step"} <= variants and len(variants) == 8
    assert summary["reflections"] == summary["samples"] == 8 * 8 * 2  # 1 reflection per sample
    chats = [json.loads(line) for line in (run / "data" / "sft.jsonl").read_text().splitlines()]
    assert chats, "the simulated answers hit some boxed labels: stage 1 composes traces"
    for chat in chats:
        assert "<answer> </answer> tags" in chat["messages"][0]["content"]
        assert "<verdict>Correct</verdict>" in chat["messages"][-1]["content"]
    sft = json.loads((run / "sft" / "sft.json").read_text())
    assert sft["examples"] == len(chats) and sft["steps"] >= 1
    evaluated = json.loads((run / "eval" / "summary.json").read_text())
    assert set(evaluated) == {"base", "sft"}
