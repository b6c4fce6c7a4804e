"""`skillfactory report RUN_DIR [RUN_DIR…]`: the paper's tables and figures for run folders.

Writes `report.html` (self-contained: inline CSS, figures embedded) and `report.md` with its PNGs
beside it, by default to `<first RUN_DIR>/report/` (see `skillfactory.report`). A run folder that
lacks stages (a baseline that skips them, a run still going) is reported with what it has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skillfactory.report import write_report


def report(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders (<output_dir>/<run name>/, as `skillfactory run` writes them).",
            exists=True,
            file_okay=False,
            dir_okay=True,
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Folder of the report. Default: <first RUN_DIR>/report."),
    ] = None,
) -> None:
    """Write an HTML page and a Markdown file comparing the runs: accuracy and skill usage per
    method, budget forcing, response lengths, GRPO curves and the stage-1 summary."""

    out = output if output is not None else run_dirs[0] / "report"
    files = write_report(run_dirs, out)
    for run in files.runs:
        if not run.evals and run.stage1 is None and not run.grpo_steps:
            typer.echo(f"{run.path}: no stage results found (is it a run folder?)", err=True)
    typer.echo(f"report written to {files.html} and {files.markdown}", err=True)


def register(app: typer.Typer) -> None:
    """Add the `report` command."""
    app.command()(report)
