"""`skillfactory eval` as a user runs it, on the tiny config-built model; its option parsing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from skillfactory.cli import app
from skillfactory.cli.eval import parse_models


def test_models_are_label_path_pairs_or_bare_paths() -> None:
    assert parse_models([], "smollm2-135m-instruct") == {"base": "smollm2-135m-instruct"}
    assert parse_models(["sft=runs/x/sft", "Qwen/Qwen2.5-1.5B-Instruct"], "m") == {
        "sft": "runs/x/sft",
        "Qwen2.5-1.5B-Instruct": "Qwen/Qwen2.5-1.5B-Instruct",
    }
    with pytest.raises(typer.BadParameter, match="twice"):
        parse_models(["a=x", "a=y"], "m")
    with pytest.raises(typer.BadParameter, match="LABEL=PATH"):
        parse_models(["=x"], "m")


def test_unknown_tasks_are_refused_before_any_model_loads(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"model": str(tmp_path / "missing")}))
    result = CliRunner().invoke(app, ["eval", str(spec), "--task", "countdown-9"])
    assert result.exit_code == 2
    assert "unknown task 'countdown-9'" in result.output


def test_eval_writes_records_and_prints_a_table(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "cli",
                "model": str(tiny_model_dir),
                "engine": {"type": "transformers", "device": "cpu", "max_batch_size": 8},
                "eval": {"num_problems": 50, "samples_per_problem": 2, "max_tokens": 8},
            }
        )
    )
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "skillfactory.cli", "eval", str(spec), "--output-dir", str(out),
               "--task", "multiplication-2", "--task", "csqa", "--num-problems", "3",
               "--model", f"tiny={tiny_model_dir}"]  # fmt: skip
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr

    folder = out / "cli" / "eval"
    for task in ("multiplication-2", "csqa"):
        records = [json.loads(line) for line in (folder / "tiny" / f"{task}.jsonl").open()]
        assert len(records) == 6 and all(r["tokens"] <= 8 for r in records)
        assert len({r["problem_id"] for r in records}) == 3
    summary = json.loads((folder / "summary.json").read_text())
    assert list(summary["tiny"]["tasks"]) == ["multiplication-2", "csqa"]
    assert (folder / "tiny" / "aggregate.json").exists()

    table = result.stdout
    for text in (
        "accuracy",
        "#Ans",
        "#Ref",
        "F1 correct",
        "F1 incorrect",
        "tiny",
        "csqa",
        "overall",
    ):
        assert text in table
    row = next(line for line in table.splitlines() if "multiplication-2" in line)
    accuracy = summary["tiny"]["tasks"]["multiplication-2"]["accuracy"]
    assert f"{accuracy:.3f}" in row
    assert "tiny · csqa: accuracy" in result.stderr
