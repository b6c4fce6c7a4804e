"""`skillfactory serve composer`: stage 1's verdict filter and trace assembly as a gRPC service,
writing SFT datasets under `--data-root` (the shared store). Registered by `skillfactory.cli.serve`,
whose server options, ready line and shutdown it shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skillfactory.cli.serve import (
    DrainOption,
    GraceOption,
    HostOption,
    LogLevelOption,
    MaxMessageOption,
    MetricsPortOption,
    PortOption,
    TlsCertOption,
    TlsKeyOption,
    TokenFileOption,
    WorkersOption,
    serve_until_signal,
    server_config_or_exit,
)

DataRootOption = Annotated[
    Path,
    typer.Option(
        help="Folder on the shared store that output_uri paths must lie in (relative ones are "
        "taken under it); must exist."
    ),
]


def serve_composer(
    data_root: DataRootOption,
    host: HostOption = "127.0.0.1",
    port: PortOption = 0,
    metrics_port: MetricsPortOption = 0,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    max_message_mb: MaxMessageOption = 64.0,
    workers: WorkersOption = 8,
    grace_seconds: GraceOption = 60.0,
    drain_seconds: DrainOption = 0.0,
    log_level: LogLevelOption = "info",
) -> None:
    """Serve the composer service: verdict filter and silver-trace assembly (Algorithm 1)."""
    from skillfactory.serving.composer import setup_composer_server

    config = server_config_or_exit(
        "composer",
        log_level,
        host=host,
        port=port,
        metrics_port=metrics_port,
        token_file=token_file,
        tls_cert=tls_cert,
        tls_key=tls_key,
        max_message_mb=max_message_mb,
        workers=workers,
        grace_seconds=grace_seconds,
        drain_seconds=drain_seconds,
    )
    if not data_root.is_dir():
        typer.echo(f"--data-root {str(data_root)!r} is not a directory", err=True)
        raise typer.Exit(2)
    root = data_root.resolve()
    serve_until_signal(setup_composer_server(config, root), "composer", data_root=str(root))
