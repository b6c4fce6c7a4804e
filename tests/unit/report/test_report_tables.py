"""Report tables: every number is the JSON value, formatted; absent values are a dash."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run_folders import STAGE1, TASKS, build_run  # noqa: E402

from skillfactory.report.collect import read_run  # noqa: E402
from skillfactory.report.tables import (  # noqa: E402
    NONE,
    accuracy_table,
    budget_forcing_table,
    runs_table,
    skill_table,
    stage1_table,
    training_table,
)


def summary_of(folder: Path) -> dict:
    return json.loads((folder / "eval" / "summary.json").read_text())


def test_accuracy_table_holds_the_json_accuracies(tmp_path: Path) -> None:
    folders = [build_run(tmp_path, "sf"), build_run(tmp_path, "rl", "rl-only")]
    table = accuracy_table([read_run(f) for f in folders])
    groups = ["in-domain", "harder", "out-of-domain", "overall"]
    assert table.columns == ["run", "method", *TASKS, *groups]
    assert [row[:2] for row in table.rows] == [
        ["sf", "base"],
        ["sf", "SFT"],
        ["sf", "SFT→GRPO"],
        ["rl", "base"],
        ["rl", "rl-only GRPO"],
    ]
    keys = ["in_domain", "harder", "out_of_domain", "overall"]
    row = 0
    for folder in folders:
        for model in summary_of(folder).values():
            expected = [f"{model['tasks'][t]['accuracy']:.3f}" for t in TASKS]
            expected += [f"{model['groups'][g]['accuracy']:.3f}" for g in keys]
            assert table.rows[row][2:] == expected
            row += 1
    assert [r.name for r in table.sources] == ["sf", "rl"]


def test_a_run_without_a_task_shows_a_dash(tmp_path: Path) -> None:
    folder = build_run(tmp_path, "sf")
    summary = summary_of(folder)
    del summary["sft"]["tasks"]["csqa"]
    (folder / "eval" / "summary.json").write_text(json.dumps(summary))
    table = accuracy_table([read_run(folder)])
    assert table.rows[1][2 + TASKS.index("csqa")] == NONE


def test_skill_table_holds_answers_reflections_and_verdict_f1(tmp_path: Path) -> None:
    folder = build_run(tmp_path, "sf")
    table = skill_table([read_run(folder)])
    assert len(table.rows) == 3 * len(TASKS)
    summary = summary_of(folder)
    for row in table.rows:
        label = {"base": "base", "SFT": "sft", "SFT→GRPO": "grpo"}[row[1]]
        metrics = summary[label]["tasks"][row[2]]
        assert row[3:] == [
            f"{metrics['n_answers']:.2f}",
            f"{metrics['n_reflections']:.2f}",
            f"{metrics['reflect_share']:.3f}",
            f"{metrics['verdict_f1_correct']:.3f}",
            f"{metrics['verdict_f1_incorrect']:.3f}",
            f"{metrics['mean_tokens']:.1f}",
        ]


def test_budget_forcing_table_only_where_evaluated(tmp_path: Path) -> None:
    plain = read_run(build_run(tmp_path, "plain"))
    assert budget_forcing_table([plain]) is None
    forced_folder = build_run(tmp_path, "forced", forcing=True)
    table = budget_forcing_table([plain, read_run(forced_folder)])
    assert table is not None and [r.name for r in table.sources] == ["forced"]
    assert len(table.rows) == 3 * (len(TASKS) + 1)
    grpo = summary_of(forced_folder)["grpo"]
    first = grpo["tasks"]["countdown-3"]["budget_forcing"]
    assert table.rows[-4] == [
        "forced",
        "SFT→GRPO",
        "countdown-3",
        "32 / 64",
        f"{first['accuracy_without']:.3f}",
        f"{first['accuracy_with']:.3f}",
        "+0.125",
        "0.500",
    ]
    overall = grpo["groups"]["overall"]["budget_forcing"]
    assert table.rows[-1][2:8] == [
        "overall (mean)",
        "32 / 64",
        f"{overall['accuracy_without']:.3f}",
        f"{overall['accuracy_with']:.3f}",
        "+0.100",
        "0.500",
    ]


def test_stage1_table_holds_the_summary(tmp_path: Path) -> None:
    run = read_run(build_run(tmp_path, "sf"))
    table = stage1_table(run)
    assert table is not None
    cells = dict((row[0], row[1]) for row in table.rows)
    assert cells["samples"] == str(STAGE1["samples"])
    assert cells["sample accuracy"] == "0.188"
    assert cells["accuracy · alternatives"] == "0.250"
    assert cells["accuracy · step_by_step"] == "0.125"
    assert cells["verdict accuracy"] == "0.438"
    assert cells["verdict-filter yield · correct"] == "7 / 9 (0.778)"
    assert cells["verdict-filter yield · incorrect"] == "11 / 39 (0.282)"
    assert cells["traces"] == "4"
    assert cells["traces by samples"] == "1: 2, 3: 2"
    assert stage1_table(read_run(build_run(tmp_path, "rl", "rl-only"))) is None


def test_training_and_runs_tables(tmp_path: Path) -> None:
    run = read_run(build_run(tmp_path, "sf"))
    training = training_table(run)
    assert training is not None
    cells = dict((row[0], row[1]) for row in training.rows)
    assert cells["SFT train loss"] == "1.2346"
    assert cells["GRPO steps logged"] == "3"
    assert cells["GRPO reward mean · last step"] == "0.300"
    assert training_table(read_run(tmp_path / "nothing")) is None
    runs = runs_table([run])
    assert runs.rows[0][:6] == [
        "sf",
        run.where,
        "skillfactory",
        "/models/tiny",
        "countdown-3",
        "data, sft, grpo, eval",
    ]
    rl_only = runs_table([read_run(build_run(tmp_path, "rl", "rl-only"))])
    assert rl_only.rows[0][5] == "grpo, eval (rl-only skips data, sft)"
