"""The report shows the step of the best evaluation during GRPO (`grpo.eval_every`) from the
stage summary, and nothing about it for runs that did not evaluate during training."""

from __future__ import annotations

from pathlib import Path

from skillfactory.report.collect import Run
from skillfactory.report.tables import training_table


def test_best_step_and_accuracy_rows() -> None:
    run = Run(
        Path("runs/sf"),
        "sf",
        {},
        grpo_summary={"groups_trained": 12, "best_step": 40, "best_eval_accuracy": 0.375},
    )
    table = training_table(run)
    assert table is not None
    cells = dict((row[0], row[1]) for row in table.rows)
    assert cells["GRPO best step (held-out eval)"] == "40"
    assert cells["GRPO best eval accuracy"] == "0.375"


def test_no_best_rows_without_evaluations_during_training() -> None:
    run = Run(Path("runs/sf"), "sf", {}, grpo_summary={"groups_trained": 12})
    table = training_table(run)
    assert table is not None
    assert not any(row[0].startswith("GRPO best") for row in table.rows)
