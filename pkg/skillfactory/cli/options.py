"""Command-line options every service shares, declared once.

- `serving_options(service, …)` adds the server options (addresses, ports, tokens, TLS, message
  size, workers and streams, shutdown timing, log level) to a command whose function takes a
  `serving: ServingConfig` parameter. The options are parsed once, into that config, after JSON
  logging for `service` is set up; a bad value or an unreadable token file exits 2 with the reason.
  Services differ only in defaults (`max_message_mb`, `workers`, `grace_seconds`).
- The engine options (`EngineOption`, `DtypeOption`, …) and `engine_spec_from_flags`, the one
  place a command line becomes an `EngineSpec`.
- The queue options of the distributed mode (`RedisUrlOption`, `ClaimIdleOption`,
  `StreamPrefixOption`).
- `serve_until_signal`: start a server, print its ready JSON line, serve until SIGTERM/SIGINT.

Nothing here imports grpc or torch at import time: `skillfactory --help` stays fast and works
without the serve extra.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from skillfactory.runspec import (
    EngineSpec,
    SimulatedEngineSpec,
    TransformersEngineSpec,
    VllmEngineSpec,
)
from skillfactory.serving.logs import setup_logging

if TYPE_CHECKING:
    from skillfactory.serving.server import ServingConfig

EXIT_USAGE = 2

HostOption = Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 in a container.")]
PortOption = Annotated[int, typer.Option(min=0, max=65535, help="gRPC port; 0 picks a free one.")]
MetricsPortOption = Annotated[
    int,
    typer.Option(min=-1, max=65535, help="Prometheus /metrics port; 0 picks one, -1 turns it off."),
]
MetricsHostOption = Annotated[
    str,
    typer.Option(help="Interface the /metrics endpoint binds; 0.0.0.0 (or the pod IP) in a pod."),
]
HealthPortOption = Annotated[
    int,
    typer.Option(
        min=-1,
        max=65535,
        help="Plaintext port serving only gRPC health (probes; they speak no TLS); 0 picks "
        "one, -1 (default) none.",
    ),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        help="File holding a bearer token accepted with every right (role admin); default: "
        "$SKILLFACTORY_TOKEN. With neither this nor --tokens-dir there is no auth, which only "
        "loopback addresses allow without --insecure-no-auth."
    ),
]
TokensDirOption = Annotated[
    Path | None,
    typer.Option(
        help="Folder of further accepted tokens (a mounted Secret): one file per caller, named "
        "ROLE or ROLE.LABEL (admin, submitter, learner, rollout), holding its token."
    ),
]
ClientTokenFileOption = Annotated[
    Path | None,
    typer.Option(
        help="File holding the token this service sends to the services it calls (reward, "
        "composer); default: the --token-file token."
    ),
]
InsecureNoAuthOption = Annotated[
    bool,
    typer.Option(
        "--insecure-no-auth",
        help="Serve without any token on an address other than loopback (refused otherwise).",
    ),
]
TlsCertOption = Annotated[Path | None, typer.Option(help="PEM certificate chain (TLS).")]
TlsKeyOption = Annotated[Path | None, typer.Option(help="PEM private key (TLS).")]
TlsCaOption = Annotated[
    Path | None,
    typer.Option(
        help="PEM CA certificates: call the services this one uses (reward, composer) over TLS, "
        "verifying their certificates against these; default: plaintext."
    ),
]
MaxStreamsOption = Annotated[
    int,
    typer.Option(
        min=1,
        help="Streaming calls served at once, on threads besides --workers; more are refused "
        "(RESOURCE_EXHAUSTED).",
    ),
]
MaxMessageOption = Annotated[
    float, typer.Option(min=0.001, help="Largest request/response in MiB.")
]
WorkersOption = Annotated[int, typer.Option(min=1, help="Threads handling calls.")]
GraceOption = Annotated[
    float, typer.Option(min=0, help="Seconds calls in flight get to finish on shutdown.")
]
DrainOption = Annotated[
    float, typer.Option(min=0, help="Seconds to keep serving after health turns NOT_SERVING.")
]
LogLevelOption = Annotated[str, typer.Option(help="Log level: debug, info, warning, error.")]

EngineOption = Annotated[
    str,
    typer.Option(
        help="Engine: transformers, vllm, or simulated (SIMULATION: text a function of prompt "
        "and seed, no model; with --simulated-token-delay-ms per decode step)."
    ),
]
DeviceOption = Annotated[
    str, typer.Option(help="Torch device of the transformers engine; auto picks cuda if any.")
]
DtypeOption = Annotated[str, typer.Option(help="Weights dtype: auto, float32, bfloat16, float16.")]
MaxBatchOption = Annotated[
    int, typer.Option(min=1, help="Most rows (prompts × n) decoded together in one engine call.")
]
CompileOption = Annotated[
    bool, typer.Option(help="On GPU: static KV cache and a compiled decode step (transformers).")
]
SeedOption = Annotated[int, typer.Option(help="Sampling seed of the engine.")]
SimulatedDelayOption = Annotated[
    float,
    typer.Option(
        min=0,
        help="SIMULATION for benchmarks and fault tests: every engine call lasts at least this "
        "many ms per decode step (see skillfactory.engines.simulated).",
    ),
]

RedisUrlOption = Annotated[
    str,
    typer.Option(
        help="Redis URL of the queue shared with the learner ('' = none); the password comes "
        "from $SKILLFACTORY_REDIS_PASSWORD."
    ),
]
ClaimIdleOption = Annotated[
    int,
    typer.Option(min=1, help="Milliseconds after which a silent sampler's tasks are reclaimed."),
]
StreamPrefixOption = Annotated[str, typer.Option(help="Prefix of the queue's stream keys.")]


def _server_parameters(
    max_message_mb: float, workers: int, grace_seconds: float
) -> list[inspect.Parameter]:
    keyword = inspect.Parameter.KEYWORD_ONLY
    defaults: list[tuple[str, Any, Any]] = [
        ("host", HostOption, "127.0.0.1"),
        ("port", PortOption, 0),
        ("metrics_port", MetricsPortOption, 0),
        ("metrics_host", MetricsHostOption, "127.0.0.1"),
        ("health_port", HealthPortOption, -1),
        ("token_file", TokenFileOption, None),
        ("tokens_dir", TokensDirOption, None),
        ("client_token_file", ClientTokenFileOption, None),
        ("insecure_no_auth", InsecureNoAuthOption, False),
        ("tls_cert", TlsCertOption, None),
        ("tls_key", TlsKeyOption, None),
        ("tls_ca", TlsCaOption, None),
        ("max_message_mb", MaxMessageOption, max_message_mb),
        ("workers", WorkersOption, workers),
        ("max_streams", MaxStreamsOption, 4),
        ("grace_seconds", GraceOption, grace_seconds),
        ("drain_seconds", DrainOption, 0.0),
        ("log_level", LogLevelOption, "info"),
    ]
    return [inspect.Parameter(n, keyword, annotation=a, default=d) for n, a, d in defaults]


SERVER_OPTION_NAMES = tuple(p.name for p in _server_parameters(16.0, 8, 30.0))

Command = TypeVar("Command", bound=Callable[..., Any])


def serving_options(
    service: str, *, max_message_mb: float = 16.0, workers: int = 8, grace_seconds: float = 30.0
) -> Callable[[Command], Command]:
    """Give a command the server options, parsed into its `serving: ServingConfig` argument."""

    def decorate(command: Command) -> Command:
        own = inspect.signature(command)
        if "serving" not in own.parameters:
            raise TypeError(f"{command.__name__} takes no `serving` parameter")
        # The config's class is imported only when serving (grpc): a stand-in resolves the hint.
        hints = typing.get_type_hints(
            command, localns={"ServingConfig": object}, include_extras=True
        )
        kept = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in own.parameters.values()
            if p.name != "serving"
        ]
        server = _server_parameters(max_message_mb, workers, grace_seconds)
        signature = own.replace(parameters=kept + server)

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            flags = {name: kwargs.pop(name) for name in SERVER_OPTION_NAMES}
            return command(*args, serving=serving_config_or_exit(service, **flags), **kwargs)

        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        return wrapper  # type: ignore[return-value]

    return decorate


def serving_config_or_exit(
    service: str,
    *,
    host: str,
    port: int,
    metrics_port: int,
    metrics_host: str,
    health_port: int,
    token_file: Path | None,
    tokens_dir: Path | None,
    client_token_file: Path | None,
    insecure_no_auth: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    max_message_mb: float,
    workers: int,
    max_streams: int,
    grace_seconds: float,
    drain_seconds: float,
    log_level: str,
) -> ServingConfig:
    """JSON logs for `service`, then its `ServingConfig` from the server options; an unreadable
    token file or a bad option exits 2 with the reason."""
    # deferred: heavy or optional (grpc, loaded only when serving)
    from skillfactory.serving.auth import TokenError, TokenTable, load_token
    from skillfactory.serving.server import ServingConfig

    setup_logging(service, log_level)
    try:
        return ServingConfig(
            host=host,
            port=port,
            metrics_port=None if metrics_port < 0 else metrics_port,
            metrics_host=metrics_host,
            health_port=None if health_port < 0 else health_port,
            max_workers=workers,
            max_streams=max_streams,
            max_message_mb=max_message_mb,
            grace_s=grace_seconds,
            drain_s=drain_seconds,
            token=load_token(token_file),
            tokens=TokenTable.from_dir(tokens_dir) if tokens_dir is not None else TokenTable(),
            client_token=load_token(client_token_file) if client_token_file else None,
            insecure_no_auth=insecure_no_auth,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
        )
    except (TokenError, ValueError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_USAGE) from None


def engine_spec_from_flags(
    engine: str,
    *,
    dtype: str,
    device: str,
    max_batch_size: int,
    compile: bool,
    simulated_token_delay_ms: float = 0.0,
) -> EngineSpec:
    """The engine section a command line asks for; exits 2 naming a bad value."""
    try:
        if engine == "simulated":
            return SimulatedEngineSpec(
                seconds_per_token=simulated_token_delay_ms / 1000, max_batch_size=max_batch_size
            )
        if engine == "transformers":
            return TransformersEngineSpec(
                dtype=dtype,  # type: ignore[arg-type]
                device=device,
                max_batch_size=max_batch_size,
                compile=compile,
            )
        if engine == "vllm":
            return VllmEngineSpec(dtype=dtype)  # type: ignore[arg-type]
        raise ValueError(f"unknown engine {engine!r}: transformers, vllm or simulated")
    except (ValueError, ValidationError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_USAGE) from None


def serve_until_signal(server: Any, service: str, **ready_extra: str) -> None:
    """Start `server`, print its ready JSON line (plus `ready_extra`), block until SIGTERM or
    SIGINT and shut down gracefully; a server that cannot start exits 1."""
    try:
        server.start()
    except (OSError, RuntimeError) as error:
        typer.echo(f"cannot start the {service} service: {error}", err=True)
        raise typer.Exit(1) from None
    sys.stdout.write(json.dumps({**server.ready_info(), **ready_extra}) + "\n")
    sys.stdout.flush()
    server.wait_for_termination_signal()
