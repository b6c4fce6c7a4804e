"""What the report shows, in order: the runs, accuracy across methods, skill usage, the ablation
table (when the runs are variants of one base spec), budget forcing, response lengths, GRPO training and stage 1. Each part says what is missing instead of
leaving a hole; figures are drawn into `figure_dir` as they are needed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from skillfactory.report.collect import Run
from skillfactory.report.figures import grpo_curves, length_histograms
from skillfactory.report.render import Notes, Section
from skillfactory.report.tables import (
    ablation_tables,
    accuracy_table,
    budget_forcing_table,
    runs_table,
    skill_table,
    stage1_table,
    training_table,
)


def build_sections(runs: Sequence[Run], figure_dir: Path) -> list[Section]:
    """Every section of the report on `runs`; PNGs go to `figure_dir`."""
    stems = figure_stems(runs)
    return [
        runs_section(runs),
        eval_section(runs),
        *ablation_sections(runs),
        budget_forcing_section(runs),
        lengths_section(runs, figure_dir, stems),
        grpo_section(runs, figure_dir, stems),
        stage1_section(runs),
    ]


def figure_stems(runs: Sequence[Run]) -> list[str]:
    """A distinct file-name stem per run (its name, numbered when two runs share one)."""
    stems: list[str] = []
    for run in runs:
        stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in run.name) or "run"
        candidate, n = stem, 2
        while candidate in stems:
            candidate, n = f"{stem}-{n}", n + 1
        stems.append(candidate)
    return stems


def runs_section(runs: Sequence[Run]) -> Section:
    section = Section("Runs", [runs_table(runs)])
    for run in runs:
        lines = [f"missing {item}" for item in run.missing] + run.problems
        if lines:
            section.blocks += [f"{run.name} ({run.where}):", Notes(lines)]
    return section


def eval_section(runs: Sequence[Run]) -> Section:
    section = Section("Evaluation")
    if not any(run.evals for run in runs):
        section.blocks.append(Notes(["No run has evaluation results (eval/summary.json)."]))
        return section
    section.blocks += [accuracy_table(runs), skill_table(runs)]
    section.blocks += _lacking(runs, lambda run: not run.evals, "no evaluation")
    return section


def ablation_sections(runs: Sequence[Run]) -> list[Section]:
    """The paper's ablation layout, when two or more of the runs are variants of one base spec
    (`skillfactory suite run` makes such runs); nothing otherwise."""
    tables = ablation_tables(runs)
    return [Section("Ablations", [table for table in tables])] if tables else []


def budget_forcing_section(runs: Sequence[Run]) -> Section:
    table = budget_forcing_table(runs)
    if table is None:
        line = "No run was evaluated with budget forcing (eval.budget_forcing.enabled)."
        return Section("Budget forcing", [Notes([line])])
    return Section("Budget forcing", [table])


def lengths_section(runs: Sequence[Run], figure_dir: Path, stems: Sequence[str]) -> Section:
    section = Section("Response lengths")
    lacking: list[str] = []
    for run, stem in zip(runs, stems, strict=True):
        figure = length_histograms(run, figure_dir / f"{stem}-lengths.png")
        if figure is None:
            lacking.append(f"{run.name} ({run.where}): no per-sample eval records")
        else:
            section.blocks.append(figure)
    if lacking:
        section.blocks.append(Notes(lacking))
    return section


def grpo_section(runs: Sequence[Run], figure_dir: Path, stems: Sequence[str]) -> Section:
    section = Section("Training")
    lacking: list[str] = []
    for run, stem in zip(runs, stems, strict=True):
        figure = grpo_curves(run, figure_dir / f"{stem}-grpo.png")
        table = training_table(run)
        if figure is not None:
            section.blocks.append(figure)
        else:
            lacking.append(f"{run.name} ({run.where}): no GRPO steps (grpo/steps.jsonl)")
        if table is not None:
            section.blocks.append(table)
    if lacking:
        section.blocks.append(Notes(lacking))
    return section


def stage1_section(runs: Sequence[Run]) -> Section:
    section = Section("Stage 1: data construction")
    tables = [stage1_table(run) for run in runs]
    section.blocks += [table for table in tables if table is not None]
    section.blocks += _lacking(runs, lambda run: run.stage1 is None, "no stage-1 summary")
    return section


def _lacking(runs: Sequence[Run], lacks: Callable[[Run], bool], what: str) -> list[Notes]:
    lines = [f"{run.name} ({run.where}): {what}" for run in runs if lacks(run)]
    return [Notes(lines)] if lines else []
