"""The ablation table: runs that are variants of one base spec (an ablation suite) are laid out
like the paper's tables, one row per variant and model, in the paper's order, with the JSON
numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from run_folders import TASKS, build_run  # noqa: E402

from skillfactory.report import write_report  # noqa: E402
from skillfactory.report.collect import read_run  # noqa: E402
from skillfactory.report.tables import ablation_tables  # noqa: E402

# (variant, baseline, composition) in the order a user might list them: not the paper's
GIVEN = [
    ("no-reflection", "skillfactory", "no-reflection"),
    ("skillfactory", "skillfactory", "skillfactory"),
    ("fixed-length", "skillfactory", "fixed-length"),
    ("rl-only", "rl-only", "skillfactory"),
    ("star", "star", "star"),
    ("no-sample-order", "skillfactory", "no-sample-order"),
]
PAPER_ROWS = [
    ("base model", "base", "skillfactory"),
    ("rl-only", "GRPO", "rl-only"),
    ("star", "SFT", "star"),
    ("star", "SFT→GRPO", "star"),
    ("skillfactory", "SFT", "skillfactory"),
    ("skillfactory", "SFT→GRPO", "skillfactory"),
    ("no-sample-order", "SFT", "no-sample-order"),
    ("no-sample-order", "SFT→GRPO", "no-sample-order"),
    ("no-reflection", "SFT", "no-reflection"),
    ("no-reflection", "SFT→GRPO", "no-reflection"),
    ("fixed-length", "SFT", "fixed-length"),
    ("fixed-length", "SFT→GRPO", "fixed-length"),
]
"""(variant, model, run it comes from): the base model once, then each variant in the paper's
order (baselines, the method, its ablations), SFT before SFT→GRPO."""
LABELS = {"base": "base", "GRPO": "grpo", "SFT": "sft", "SFT→GRPO": "grpo"}


def build_suite(root: Path) -> dict[str, Path]:
    """One run folder per variant, each with its own numbers (offsets 0.01 apart)."""
    return {
        variant: build_run(
            root, variant, baseline, composition=composition, offset=(index + 1) / 100
        )
        for index, (variant, baseline, composition) in enumerate(GIVEN)
    }


def expected_cells(summary: dict[str, Any]) -> list[str]:
    tasks = summary["tasks"]
    cells = [f"{tasks[task]['accuracy']:.3f}" for task in TASKS]
    cells.append(f"{summary['groups']['overall']['accuracy']:.3f}")
    skills = summary["groups"]["in_domain"]
    keys = ("reflect_share", "verdict_f1_correct", "verdict_f1_incorrect")
    return cells + [f"{skills[key]:.3f}" for key in keys]


def test_one_row_per_variant_and_model_in_the_paper_order(tmp_path: Path) -> None:
    folders = build_suite(tmp_path)
    tables = ablation_tables([read_run(folder) for folder in folders.values()])
    assert len(tables) == 1
    table = tables[0]
    assert table.columns == [
        "variant", "model", "countdown-3", "countdown-4", "csqa", "overall mean",
        "reflects", "F1 correct", "F1 incorrect",
    ]  # fmt: skip
    assert [tuple(row[:2]) for row in table.rows] == [(v, m) for v, m, _ in PAPER_ROWS]
    for row, (_, model, source) in zip(table.rows, PAPER_ROWS, strict=True):
        summary = json.loads((folders[source] / "eval" / "summary.json").read_text())
        assert row[2:] == expected_cells(summary[LABELS[model]]), row[:2]
    assert [run.name for run in table.sources] == [
        "rl-only", "star", "skillfactory", "no-sample-order", "no-reflection", "fixed-length",
    ]  # fmt: skip
    assert "in-domain: countdown-3; harder: countdown-4; out-of-domain: csqa" in table.note


def test_only_variants_of_one_base_form_a_table(tmp_path: Path) -> None:
    folders = build_suite(tmp_path)
    runs = [read_run(folder) for folder in folders.values()]
    other = build_run(tmp_path / "other", "other-seed", composition="no-reflection")
    record = json.loads((other / "run.json").read_text())
    record["spec"]["seed"] = 1
    (other / "run.json").write_text(json.dumps(record))
    tables = ablation_tables([*runs, read_run(other)])
    assert len(tables) == 1 and "other-seed" not in [r.name for r in tables[0].sources]
    assert ablation_tables(runs[:1]) == []  # one variant is no ablation
    assert ablation_tables([read_run(tmp_path / "nothing"), runs[0]]) == []


def test_runs_of_one_variant_go_by_their_names(tmp_path: Path) -> None:
    runs = [
        read_run(build_run(tmp_path, name, "distill", offset=i / 100))
        for i, name in enumerate(("distill-r1", "distill-qwq"))
    ]
    runs.append(read_run(build_run(tmp_path, "sf", offset=0.05)))
    (table,) = ablation_tables(runs)
    assert [row[0] for row in table.rows] == [
        "base model", "distill-r1", "distill-r1", "distill-qwq", "distill-qwq",
        "skillfactory", "skillfactory",
    ]  # fmt: skip


def test_the_report_has_the_ablation_section(tmp_path: Path) -> None:
    folders = build_suite(tmp_path)
    files = write_report(list(folders.values()), tmp_path / "out")
    markdown = files.markdown.read_text()
    assert "\n## Ablations\n" in markdown
    section = markdown.split("\n## Ablations\n")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(PAPER_ROWS)  # the header, then one row per variant and model
    assert (
        "## Ablations"
        not in write_report([folders["star"]], tmp_path / "single").markdown.read_text()
    )
