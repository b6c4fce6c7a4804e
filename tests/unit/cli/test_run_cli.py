"""`skillfactory run` as a user runs it, on the tiny config-built model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml


def _run(spec: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skillfactory.cli", "run", str(spec)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )


def test_a_model_that_cannot_be_had_is_refused_before_anything_runs(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump({"model": "no-such-org/no-such-model", "output_dir": str(tmp_path / "runs")})
    )
    result = _run(spec)
    assert result.returncode == 2
    assert result.stderr.startswith("model: ") and "no-such-org/no-such-model" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_data_stage_runs_and_prints_its_summary(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "cli",
                "model": str(tiny_model_dir),
                "output_dir": str(tmp_path / "runs"),
                "stages": ["data"],
                "engine": {"type": "transformers", "device": "cpu", "max_batch_size": 8},
                "data": {
                    "task": "multiplication-1",
                    "num_problems": 2,
                    "samples_per_variant": 1,
                    "reflections_per_sample": 1,
                    "sampling": {"max_tokens": 4},
                    "reflection_sampling": {"max_tokens": 4},
                },
            }
        )
    )
    result = _run(spec)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)["data"]
    assert summary["problems"] == 2 and summary["samples"] == 8 and summary["reflections"] == 8
    assert (tmp_path / "runs" / "cli" / "data" / "sft.jsonl").exists()


def test_the_run_table_shows_skills_on_the_in_domain_tasks() -> None:
    """What SFT installs (reflections with verdicts) is read on the in-domain tasks: an
    out-of-domain task the model never reflects on must not halve the share."""
    from rich.console import Console

    from skillfactory.cli.run import comparison_table
    from skillfactory.runspec import parse_run_spec

    def groups(share: float) -> dict[str, dict[str, float]]:
        skills = {"n_answers": 1.0, "n_reflections": 1.0, "verdict_f1_correct": 0.4}
        return {
            "in_domain": {"accuracy": 0.5, "reflect_share": share, **skills},
            "out_of_domain": {"accuracy": 0.0, "reflect_share": 0.0},
            "overall": {"accuracy": 0.25, "reflect_share": share / 2, **skills},
        }

    summary = {"base": {"groups": groups(0.0)}, "sft": {"groups": groups(1.0)}}
    spec = parse_run_spec({"name": "t", "model": "m", "stages": ["data", "sft", "eval"]})
    console = Console(width=100, record=True)
    console.print(comparison_table(summary, spec))
    text = console.export_text()
    assert "100%" in text and "50%" not in text
    assert "on the in-domain tasks" in text
