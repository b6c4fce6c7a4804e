"""`skillfactory validate SPEC.yaml`: check a run spec without running anything."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skillfactory.runspec import InvalidRunSpec, dump_run_spec, load_run_spec

EXIT_INVALID = 2
"""Exit code for invalid input, as for a usage error."""


def validate(
    spec: Annotated[Path, typer.Argument(help="Run spec YAML file.")],
    show: Annotated[
        bool, typer.Option("--show", help="Print the spec with every default filled in.")
    ] = False,
) -> None:
    """Print OK, or each problem as `field.path: what is allowed (got value)`; exit 2 if invalid."""
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
    typer.echo("OK")


def register(app: typer.Typer) -> None:
    """Add the `validate` command."""
    app.command()(validate)
