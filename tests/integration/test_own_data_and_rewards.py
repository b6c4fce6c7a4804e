"""Issue 17 items 1–2 end to end: a run spec with a JSONL dataset of one's own and a plugin
reward (`own_rewards:brevity`, a function in a file of this test) runs data → sft → grpo → eval
on the tiny model; the per-reward values appear in `steps.jsonl`, the learner's metrics and the
report."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry
from test_pipeline import run_cli, tiny_spec
from typer.testing import CliRunner

from skillfactory.cli import app
from skillfactory.serving.learner_metrics import LearnerMetrics
from skillfactory.train.step_record import StepRecord

REWARDS = [
    {"name": "correctness", "weight": 1.0},
    {"name": "format", "weight": 0.2},
    {"name": "own_rewards:brevity", "weight": 0.1},
]


def write_rows(path: Path, pairs: list[tuple[int, int]]) -> None:
    path.write_text(
        "".join(
            json.dumps({"uid": f"{a}x{b}", "prompt": f"What is {a} plus {b}?", "gold": a + b})
            + "\n"
            for a, b in pairs
        )
    )


def test_own_jsonl_dataset_and_plugin_reward_run_every_stage(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    write_rows(train, [(a, b) for a in range(1, 5) for b in range(1, 4)])
    write_rows(test, [(10, 20), (30, 40), (50, 60)])
    spec = tiny_spec(tiny_model_dir, tmp_path / "runs")
    spec["datasets"] = [
        {
            "name": "sums",
            "path": str(train),
            "test_path": str(test),
            "question": "prompt",
            "answer": "gold",
            "id": "uid",
            "grader": "numeric",
            "template": "{prompt} Answer inside <answer> </answer> tags.",
        }
    ]
    spec["data"]["task"] = "sums"
    spec["grpo"]["rewards"] = REWARDS
    spec["grpo"]["steps"] = 2
    spec["eval"]["tasks"] = ["sums"]

    result = run_cli(spec, tmp_path / "spec.yaml")
    assert result.exit_code == 0, result.output

    run = tmp_path / "runs" / "tiny"
    samples = [json.loads(line) for line in (run / "data" / "samples.jsonl").open()]
    assert samples and all(s["task"] == "sums" and s["grader"] == "numeric" for s in samples)
    assert all(s["id"].startswith("sums-") and "plus" in s["question"] for s in samples)
    steps = [json.loads(line) for line in (run / "grpo" / "steps.jsonl").open()]
    assert [s["version"] for s in steps] == [1, 2]
    for step in steps:
        terms = step["reward_terms"]
        assert set(terms) == {"correctness", "format", "own_rewards:brevity"}
        assert 0.0 < terms["own_rewards:brevity"] <= 0.5  # 1 / (1 + tokens), tokens ≥ 1
        assert step["reward_failures"] == {}
        weighted = terms["correctness"] + 0.2 * terms["format"] + 0.1 * terms["own_rewards:brevity"]
        assert abs(step["reward_mean"] - weighted) < 1e-6
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert set(summary["grpo"]["tasks"]) == {"sums"}

    registry = CollectorRegistry()
    LearnerMetrics(registry).on_step(StepRecord.from_json(steps[-1]))
    brevity = registry.get_sample_value(
        "skillfactory_learner_reward_term", {"reward": "own_rewards:brevity"}
    )
    assert brevity == steps[-1]["reward_terms"]["own_rewards:brevity"]

    report = CliRunner().invoke(app, ["report", str(run)])
    assert report.exit_code == 0, report.output
    markdown = (run / "report" / "report.md").read_text()
    assert "GRPO reward term own\\_rewards:brevity · last step" in markdown  # _ escaped
    assert "GRPO reward term format · last step" in markdown
