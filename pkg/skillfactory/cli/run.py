"""`skillfactory run SPEC.yaml`: the spec's stages in order, in one process (embedded mode)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from skillfactory.cli.data import load_spec_or_exit, run_data_stage
from skillfactory.cli.validate import EXIT_INVALID
from skillfactory.runspec import RunSpec

STAGE_RUNNERS = {"data": run_data_stage}
"""Stages this build can run; SFT, GRPO and eval join as they land."""


def missing_stages(spec: RunSpec) -> list[str]:
    """Stages the spec asks for that this build cannot run."""
    return [stage for stage in spec.stages if stage not in STAGE_RUNNERS]


def run(
    spec: Annotated[Path, typer.Argument(help="Run spec YAML file.")],
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Override the spec's output_dir.")
    ] = None,
) -> None:
    """Run the spec's stages in order; refuses up front a stage this build does not have."""
    run_spec = load_spec_or_exit(spec, output_dir)
    missing = missing_stages(run_spec)
    if missing:
        typer.echo(
            f"stages: {', '.join(missing)} cannot run in this build (available: "
            f"{', '.join(STAGE_RUNNERS)}); list only those under `stages:` in {spec}",
            err=True,
        )
        raise typer.Exit(EXIT_INVALID)
    results: dict[str, Any] = {}
    for stage in run_spec.stages:
        results[stage] = STAGE_RUNNERS[stage](run_spec)
    typer.echo(json.dumps(results, indent=2, sort_keys=True))


def register(app: typer.Typer) -> None:
    """Add the `run` command."""
    app.command()(run)
