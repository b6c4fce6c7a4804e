"""Every shipped example spec: `skillfactory validate` passes it, its tasks exist, and the paper
specs evaluate with budget forcing (new examples are covered as they are added)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from skillfactory.cli import app
from skillfactory.runspec import hub_dataset, load_run_spec
from skillfactory.tasks import get_task

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(
    path
    for path in (REPO / "examples").glob("**/*.yaml")
    if "variants" not in (yaml.safe_load(path.read_text()) or {})  # ablation suites, not specs
)
PAPER = [p for p in EXAMPLES if p.name == "paper-countdown.yaml" or p.parent.name == "paper"]


def test_there_are_example_specs() -> None:
    assert EXAMPLES and PAPER
    names = {p.name for p in PAPER}
    assert {"distill.yaml", "openthoughts-1k.yaml", "openthoughts-10k.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(REPO / "examples")))
def test_validate_passes_the_example_and_its_tasks_exist(path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("OK")
    spec = load_run_spec(path)
    for task in {spec.data.task, spec.grpo.task or spec.data.task, *spec.eval.tasks}:
        assert get_task(task).name == task.removesuffix("@hf")


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
def test_paper_specs_evaluate_with_budget_forcing(path: Path) -> None:
    forcing = load_run_spec(path).eval.budget_forcing
    assert forcing.enabled
    assert (forcing.first_budget, forcing.total_budget) == (4096, 8192)


def test_the_paper_specs_say_they_never_ran_here() -> None:
    assert (
        "None of these specs has been run here" in (REPO / "examples/paper/README.md").read_text()
    )
    for path in (REPO / "examples/paper-countdown.yaml", *(REPO / "examples/paper").glob("[do]*")):
        assert "never run here" in path.read_text(), path


def test_the_recipes_share_the_paper_grpo_settings() -> None:
    paper = load_run_spec(REPO / "examples" / "paper-countdown.yaml")
    for name in ("distill.yaml", "openthoughts-1k.yaml", "openthoughts-10k.yaml"):
        spec = load_run_spec(REPO / "examples" / "paper" / name)
        assert spec.grpo == paper.grpo, name
        assert spec.eval == paper.eval, name
    distill = load_run_spec(REPO / "examples" / "paper" / "distill.yaml")
    assert distill.baseline == "distill"
    assert distill.sft.dataset is not None and hub_dataset(distill.sft.dataset) is not None
    for name, rows in (("openthoughts-1k.yaml", 1000), ("openthoughts-10k.yaml", 10_000)):
        spec = load_run_spec(REPO / "examples" / "paper" / name)
        assert spec.model == "Qwen/Qwen2.5-7B-Instruct"
        assert spec.data.task == "openthoughts@hf" and spec.data.rationalization
        assert (spec.data.samples_per_variant, spec.data.reflections_per_sample) == (2, 1)
        assert spec.sft.max_examples == rows
