"""`skillfactory serve composer`: stage 1's verdict filter and trace assembly as a gRPC service,
writing SFT datasets under `--data-root` (the shared store)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from skillfactory.cli.options import EXIT_USAGE, serve_until_signal, serving_options

if TYPE_CHECKING:
    from skillfactory.serving.server import ServingConfig

DataRootOption = Annotated[
    Path,
    typer.Option(
        help="Folder on the shared store that output_uri paths must lie in (relative ones are "
        "taken under it); must exist."
    ),
]


@serving_options("composer", max_message_mb=64.0, grace_seconds=60.0)
def serve_composer(data_root: DataRootOption, serving: ServingConfig) -> None:
    """Serve the composer service: verdict filter and silver-trace assembly (Algorithm 1)."""
    from skillfactory.serving.composer import setup_composer_server  # heavy: grpc

    if not data_root.is_dir():
        typer.echo(f"--data-root {str(data_root)!r} is not a directory", err=True)
        raise typer.Exit(EXIT_USAGE)
    root = data_root.resolve()
    serve_until_signal(setup_composer_server(serving, root), "composer", data_root=str(root))
