"""`skillfactory serve rollout-ray`: the rollout service as autoscaled Ray Serve replicas on this
machine (`skillfactory.serving.ray_rollout`). Needs the `ray` extra. Registered by
`skillfactory.cli.serve`; its engine options are `skillfactory.cli.options`'.

It starts a local Ray instance (all CPUs unless --num-cpus), Serve with its gRPC proxy on
--grpc-port, and deploys the application; when every initial replica is up it prints one JSON line
on stdout — `{"service", "address", "metrics", "tls", "auth", "application", "autoscaling"}` — and
serves until SIGTERM or Ctrl-C, which shuts Serve and Ray down and exits 0. Logs of Ray and the
replicas stay in Ray's session folder (/tmp/ray/session_latest/logs).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from skillfactory.cli.options import (
    EXIT_USAGE,
    CompileOption,
    DeviceOption,
    DtypeOption,
    EngineOption,
    LogLevelOption,
    MaxBatchOption,
    SeedOption,
    SimulatedDelayOption,
    TokenFileOption,
    engine_spec_from_flags,
)
from skillfactory.serving.logs import setup_logging

GrpcPortOption = Annotated[
    int,
    typer.Option(
        min=0,
        max=65535,
        help="Port of Ray Serve's gRPC proxy (all interfaces); 0 picks a free one.",
    ),
]


def free_port() -> int:
    """A TCP port free on this machine right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_rollout_ray(
    model: Annotated[
        str, typer.Option(help="Model folder, hub id or registered short name every replica loads.")
    ],
    min_replicas: Annotated[int, typer.Option(min=0, help="Fewest replicas.")] = 1,
    max_replicas: Annotated[int, typer.Option(min=1, help="Most replicas.")] = 2,
    target_ongoing_requests: Annotated[
        float, typer.Option(min=0.001, help="Ongoing requests per replica the autoscaler aims at.")
    ] = 2.0,
    max_ongoing_requests: Annotated[
        int, typer.Option(min=1, help="Most requests one replica takes at once.")
    ] = 4,
    upscale_delay_s: Annotated[
        float, typer.Option(min=0, help="Seconds above target before adding a replica.")
    ] = 10.0,
    downscale_delay_s: Annotated[
        float, typer.Option(min=0, help="Seconds below target before removing a replica.")
    ] = 300.0,
    grpc_port: GrpcPortOption = 0,
    num_cpus: Annotated[
        int | None, typer.Option(min=1, help="CPUs of the local Ray instance; default: all.")
    ] = None,
    replica_cpus: Annotated[float, typer.Option(min=0, help="CPUs each replica reserves.")] = 1.0,
    replica_gpus: Annotated[float, typer.Option(min=0, help="GPUs each replica reserves.")] = 0.0,
    simulated_token_delay_ms: SimulatedDelayOption = 0.0,
    engine: EngineOption = "transformers",
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    max_batch_size: MaxBatchOption = 64,
    compile: CompileOption = True,
    seed: SeedOption = 0,
    token_file: TokenFileOption = None,
    log_level: LogLevelOption = "info",
) -> None:
    """Serve the rollout service as Ray Serve replicas autoscaled on ongoing requests."""

    # deferred: heavy or optional (torch)
    from skillfactory.serving.auth import TokenError, load_token

    setup_logging("rollout-ray", log_level)
    try:
        from ray import serve  # noqa: F401 (fail early without the extra)
    except ImportError:
        typer.echo("Ray Serve is not installed: pip install 'skillfactory[ray]'", err=True)
        raise typer.Exit(2) from None
    # deferred: heavy or optional (torch)
    from skillfactory.serving.ray_rollout import APP_NAME, RayRolloutArgs, build_app, grpc_options

    engine_spec = engine_spec_from_flags(
        engine, dtype=dtype, device=device, max_batch_size=max_batch_size, compile=compile
    )
    try:
        token = load_token(token_file)
        args = RayRolloutArgs.model_validate(
            {
                "model": model,
                "engine": engine_spec.model_dump(),
                "seed": seed,
                "simulated_token_delay_ms": simulated_token_delay_ms,
                "token_file": str(token_file.resolve()) if token_file else None,
                "num_cpus": replica_cpus,
                "num_gpus": replica_gpus,
                "autoscaling": {
                    "min_replicas": min_replicas,
                    "max_replicas": max_replicas,
                    "target_ongoing_requests": target_ongoing_requests,
                    "max_ongoing_requests": max_ongoing_requests,
                    "upscale_delay_s": upscale_delay_s,
                    "downscale_delay_s": downscale_delay_s,
                },
            }
        )
    except (TokenError, ValidationError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_USAGE) from None
    port = grpc_port or free_port()
    run_ray_app(
        build_app(args),
        port=port,
        num_cpus=num_cpus or os.cpu_count() or 1,
        ready={
            "service": "rollout-ray",
            "address": f"127.0.0.1:{port}",
            "metrics": None,
            "tls": False,
            "auth": token is not None,
            "application": APP_NAME,
            "autoscaling": args.autoscaling.model_dump(),
        },
        grpc=grpc_options(port),
    )


def run_ray_app(
    application: Any, *, port: int, num_cpus: int, ready: dict[str, Any], grpc: dict[str, Any]
) -> None:
    """Start Ray and Serve here, deploy `application`, print `ready`, serve until SIGTERM/SIGINT,
    then shut Serve and Ray down. A failed start or deploy exits 1 with the reason."""
    # deferred: heavy or optional (ray)
    import ray
    from ray import serve

    # deferred: heavy or optional (torch)
    from skillfactory.serving.ray_rollout import APP_NAME

    stop = threading.Event()

    def on_signal(_number: int, _frame: FrameType | None) -> None:
        stop.set()

    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        # address="local": a new instance even when a `ray start` cluster runs here; replica
        # output stays in Ray's logs so that stdout carries only the ready line.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        for sig in signals:  # ray.init installs its own (abort on SIGTERM): ours again
            signal.signal(sig, on_signal)
        serve.start(grpc_options=grpc, http_options={"host": "127.0.0.1", "port": free_port()})
        # The gRPC proxy routes only to applications with a route prefix.
        serve.run(application, name=APP_NAME, route_prefix=f"/{APP_NAME}")
    except Exception as error:  # Ray raises many kinds (RuntimeError, RayActorError, ...)
        typer.echo(f"cannot start the rollout-ray service: {error}", err=True)
        _shutdown()
        raise typer.Exit(1) from None
    try:
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        while not stop.wait(timeout=1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _shutdown()


def _shutdown() -> None:
    # deferred: heavy or optional (ray)
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
