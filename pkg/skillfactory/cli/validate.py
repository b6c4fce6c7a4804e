"""`skillfactory validate SPEC.yaml`: check a run spec without running anything."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skillfactory.memory_plan import learner_estimate, render, rollout_estimate
from skillfactory.models.shapes import shape_of
from skillfactory.runspec import InvalidRunSpec, RunSpec, dump_run_spec, load_run_spec

EXIT_INVALID = 2
"""Exit code for invalid input, as for a usage error."""


def validate(
    spec: Annotated[Path, typer.Argument(help="Run spec YAML file.")],
    show: Annotated[
        bool, typer.Option("--show", help="Print the spec with every default filled in.")
    ] = False,
    gpus: Annotated[
        int | None,
        typer.Option(
            min=1, help="Print the memory plan for a learner of this many GPUs (with --show)."
        ),
    ] = None,
    gpu_memory: Annotated[
        float, typer.Option(min=1, help="GiB of memory per GPU, for the memory plan.")
    ] = 80.0,
) -> None:
    """Print OK, or each problem as `field.path: what is allowed (got value)`; exit 2 if invalid.
    With --gpus, also the estimated peak memory per learner GPU and per rollout replica, and a
    warning when the spec will not fit."""
    if not spec.is_file():
        typer.echo(f"{spec}: no such file", err=True)
        raise typer.Exit(EXIT_INVALID)
    try:
        run_spec = load_run_spec(spec)
    except InvalidRunSpec as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    if show:
        typer.echo(dump_run_spec(run_spec), nl=False)
    if gpus is not None:
        show_memory_plan(run_spec, gpus, gpu_memory)
    typer.echo("OK")


def show_memory_plan(spec: RunSpec, gpus: int, gpu_memory: float) -> None:
    """Print the memory plan (stderr: a warning) of `spec` on `gpus` learner GPUs."""
    shape = shape_of(spec.model)
    if shape is None:
        typer.echo(
            f"memory plan: the shape of {spec.model!r} is unknown (a local folder with a "
            "config.json, or a model of skillfactory.models.shapes, has one)",
            err=True,
        )
        return
    estimates = [
        learner_estimate(shape, spec, gpus, gpu_memory),
        rollout_estimate(shape, spec, gpu_memory),
    ]
    typer.echo(render(estimates, shape.parameters), nl=False)
    for estimate in estimates:
        if not estimate.fits:
            typer.echo(f"warning: the {estimate.device} will not fit this spec", err=True)


def register(app: typer.Typer) -> None:
    """Add the `validate` command."""
    app.command()(validate)
