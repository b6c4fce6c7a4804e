"""Reading run folders: names per baseline, every file read, anything missing said, not raised."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from run_folders import TASKS, build_run  # noqa: E402

from skillfactory.report.collect import SKIPPED_STAGES, method_name, read_run  # noqa: E402


@pytest.mark.parametrize(
    ("baseline", "composition", "names"),
    [
        ("skillfactory", "skillfactory", ("base", "SFT", "SFT→GRPO")),
        ("rl-only", "skillfactory", ("base", "SFT", "rl-only GRPO")),
        ("star", "star", ("base", "STaR-SFT", "STaR-SFT→GRPO")),
        ("distill", "skillfactory", ("base", "distill-SFT", "distill-SFT→GRPO")),
        (
            "skillfactory",
            "no-reflection",
            ("base", "SFT [no-reflection]", "SFT→GRPO [no-reflection]"),
        ),
    ],
)
def test_method_names_follow_the_baseline(
    baseline: str, composition: str, names: tuple[str, str, str]
) -> None:
    labels = ("base", "sft", "grpo")
    assert tuple(method_name(baseline, label, composition) for label in labels) == names
    assert method_name(baseline, "checkpoint-7", composition) == "checkpoint-7"


def test_skipped_stages_agree_with_the_pipeline() -> None:
    from skillfactory.runspec import parse_run_spec
    from skillfactory.stages.pipeline import stages_to_run

    for baseline in ("skillfactory", "rl-only", "star", "distill"):
        ran = stages_to_run(parse_run_spec({"baseline": baseline}))
        skipped = {"data", "sft", "grpo", "eval"} - set(ran)
        assert skipped == set(SKIPPED_STAGES.get(baseline, ())), baseline


def test_a_full_run_is_read(tmp_path: Path) -> None:
    run = read_run(build_run(tmp_path, "full"))
    assert (run.name, run.baseline, run.model, run.task) == (
        "full",
        "skillfactory",
        "/models/tiny",
        "countdown-3",
    )
    assert [m.label for m in run.evals] == ["base", "sft", "grpo"]
    assert [m.method for m in run.evals] == ["base", "SFT", "SFT→GRPO"]
    assert run.stage1 is not None and run.stage1["samples"] == 48
    assert run.sft is not None and run.sft["steps"] == 8
    assert [s["version"] for s in run.grpo_steps] == [1, 2, 3]
    assert run.evals[1].tokens == {task: list(range(20, 28)) for task in TASKS}
    assert run.missing == [] and run.problems == []
    assert "full" in run.provenance() and run.where in run.provenance()


def test_rl_only_says_the_baseline_skips_data_and_sft(tmp_path: Path) -> None:
    run = read_run(build_run(tmp_path, "rl", "rl-only"))
    assert [m.method for m in run.evals] == ["base", "rl-only GRPO"]
    assert run.stage1 is None and run.sft is None
    assert run.missing == [
        "data/summary.json: the rl-only baseline skips stage data",
        "sft/sft.json: the rl-only baseline skips stage sft",
    ]


def test_an_unfinished_run_says_which_stages_have_not_finished(tmp_path: Path) -> None:
    run = read_run(build_run(tmp_path, "partial", stages=("data",)))
    assert run.stage1 is not None and not run.evals and not run.grpo_steps
    assert "grpo/steps.jsonl: stage grpo has not finished" in run.missing
    assert "eval/summary.json: stage eval has not finished" in run.missing


def test_an_empty_folder_is_all_missing(tmp_path: Path) -> None:
    run = read_run(tmp_path)
    assert run.name == tmp_path.name and run.spec == {} and not run.evals
    assert run.missing[0].startswith("run.json")
    assert len(run.missing) == 6
    assert (run.baseline, run.model, run.task) == ("skillfactory", "?", "?")


def test_unreadable_files_are_noted_not_raised(tmp_path: Path) -> None:
    folder = build_run(tmp_path, "broken")
    (folder / "data" / "summary.json").write_text("{not json")
    (folder / "run.json").write_text("[1, 2]")
    with (folder / "grpo" / "steps.jsonl").open("a") as handle:
        handle.write('{"version": 4, "rew')  # a step being written
    (folder / "eval" / "grpo" / "csqa.jsonl").unlink()
    run = read_run(folder)
    assert run.stage1 is None and run.name == "broken"
    assert len(run.grpo_steps) == 3
    assert any(p.startswith("data/summary.json: unreadable") for p in run.problems)
    assert "run.json: not a JSON object" in run.problems
    assert "grpo/steps.jsonl: 1 unreadable line(s) skipped" in run.problems
    assert "eval/grpo/: no per-sample token counts for csqa" in run.missing


def test_eval_is_read_from_aggregates_without_a_summary(tmp_path: Path) -> None:
    folder = build_run(tmp_path, "agg")
    summary = json.loads((folder / "eval" / "summary.json").read_text())
    (folder / "eval" / "summary.json").unlink()
    for label, value in summary.items():
        (folder / "eval" / label / "aggregate.json").write_text(json.dumps(value))
    run = read_run(folder)
    assert [m.label for m in run.evals] == ["base", "sft", "grpo"]
    assert run.evals[2].tasks == summary["grpo"]["tasks"]
    assert not any(m.startswith("eval/summary.json") for m in run.missing)
