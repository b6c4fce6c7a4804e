"""`skillfactory serve SERVICE`: run one service of the distributed mode as a gRPC server.

When the server is ready it prints one JSON line on stdout — `{"service", "address", "metrics",
"tls", "auth"}` — so a launcher can start it on port 0 and read where it landed. Logs go to stderr
as JSON lines. SIGTERM (or Ctrl-C) shuts it down gracefully: health turns NOT_SERVING, calls in
flight finish within the grace period, and the process exits 0.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

serve_app = typer.Typer(
    name="serve",
    help="Run a service of the distributed mode (gRPC, health, metrics, graceful shutdown).",
    no_args_is_help=True,
)

HostOption = Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 in a container.")]
PortOption = Annotated[int, typer.Option(min=0, max=65535, help="gRPC port; 0 picks a free one.")]
MetricsPortOption = Annotated[
    int,
    typer.Option(min=-1, max=65535, help="Prometheus /metrics port; 0 picks one, -1 turns it off."),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        help="File holding the bearer token callers must send; default: $SKILLFACTORY_TOKEN, "
        "and no auth when neither is set."
    ),
]
TlsCertOption = Annotated[Path | None, typer.Option(help="PEM certificate chain (TLS).")]
TlsKeyOption = Annotated[Path | None, typer.Option(help="PEM private key (TLS).")]
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


def server_config_or_exit(
    service: str,
    log_level: str,
    *,
    host: str,
    port: int,
    metrics_port: int,
    token_file: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    max_message_mb: float,
    workers: int,
    grace_seconds: float,
    drain_seconds: float,
) -> Any:
    """JSON logs for `service`, then its `ServingConfig` from the shared server options; an
    unreadable token file or a bad option exits 2 with the reason."""
    from skillfactory.serving.auth import TokenError, load_token
    from skillfactory.serving.logs import setup_logging
    from skillfactory.serving.server import ServingConfig

    setup_logging(service, log_level)
    try:
        return ServingConfig(
            host=host,
            port=port,
            metrics_port=None if metrics_port < 0 else metrics_port,
            max_workers=workers,
            max_message_mb=max_message_mb,
            grace_s=grace_seconds,
            drain_s=drain_seconds,
            token=load_token(token_file),
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
    except (TokenError, ValueError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


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


def serve_reward(
    host: HostOption = "127.0.0.1",
    port: PortOption = 0,
    metrics_port: MetricsPortOption = 0,
    token_file: TokenFileOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    max_message_mb: MaxMessageOption = 16.0,
    workers: WorkersOption = 8,
    grace_seconds: GraceOption = 30.0,
    drain_seconds: DrainOption = 0.0,
    log_level: LogLevelOption = "info",
) -> None:
    """Serve the reward service: batch grading with the task graders."""
    from skillfactory.serving.reward import setup_reward_server

    config = server_config_or_exit(
        "reward",
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
    serve_until_signal(setup_reward_server(config), "reward")


serve_app.command("reward")(serve_reward)

from skillfactory.cli.serve_composer import serve_composer  # noqa: E402 (it uses the options above)

serve_app.command("composer")(serve_composer)


ModelOption = Annotated[
    str, typer.Option(help="Model folder, hub id or registered short name to generate with.")
]
EngineOption = Annotated[str, typer.Option(help="Engine: transformers or vllm.")]
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


def serve_rollout(
    model: Annotated[
        str,
        typer.Option(
            help="Model folder, hub id or registered short name to start with; '' waits for "
            "the first rollout task to name one."
        ),
    ] = "",
    redis_url: RedisUrlOption = "",
    samplers: Annotated[
        int, typer.Option(min=0, help="Sampler worker threads taking GRPO rollout tasks.")
    ] = 1,
    reward: Annotated[
        str, typer.Option(help="Reward service HOST:PORT for the samplers ('' grades here).")
    ] = "",
    tasks_per_call: Annotated[
        int, typer.Option(min=1, help="Rollout tasks a sampler samples in one engine call.")
    ] = 1,
    claim_idle_ms: ClaimIdleOption = 60_000,
    stream_prefix: StreamPrefixOption = "skillfactory",
    simulated_token_delay_ms: Annotated[
        float,
        typer.Option(
            min=0,
            help="SIMULATION for benchmarks and fault tests: every engine call lasts at least "
            "this many ms per decode step (see skillfactory.engines.simulated).",
        ),
    ] = 0.0,
    engine: EngineOption = "transformers",
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    max_batch_size: MaxBatchOption = 64,
    compile: CompileOption = True,
    seed: SeedOption = 0,
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
    """Serve the rollout service: generation with one engine, weight reloads between requests,
    and (with --redis-url) sampler workers serving the learner's GRPO rollout tasks."""
    from pydantic import ValidationError

    from skillfactory.engines.setup import setup_engine
    from skillfactory.engines.simulated import TokenDelayEngine
    from skillfactory.models.registry import ModelUnavailableError
    from skillfactory.runspec import RedisQueueSpec, TransformersEngineSpec, VllmEngineSpec
    from skillfactory.serving.rollout import setup_rollout_server
    from skillfactory.serving.samplers import SamplerConfig, SamplerPool
    from skillfactory.train.sampler_worker import SamplerMetrics

    config = server_config_or_exit(
        "rollout",
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
    try:
        spec: TransformersEngineSpec | VllmEngineSpec
        if engine == "transformers":
            spec = TransformersEngineSpec(
                dtype=dtype,  # type: ignore[arg-type]
                device=device,
                max_batch_size=max_batch_size,
                compile=compile,
            )
        elif engine == "vllm":
            spec = VllmEngineSpec(dtype=dtype)  # type: ignore[arg-type]
        else:
            raise ValueError(f"unknown engine {engine!r}: transformers or vllm")
    except (ValueError, ValidationError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None

    def factory(name: str) -> Any:
        built = setup_engine(spec, name, seed=seed)
        if simulated_token_delay_ms > 0:
            return TokenDelayEngine(built, simulated_token_delay_ms / 1000)
        return built

    try:
        generator = factory(model) if model else None
    except (ModelUnavailableError, OSError) as error:
        typer.echo(f"cannot load the model {model!r}: {error}", err=True)
        raise typer.Exit(2) from None
    server, servicer = setup_rollout_server(
        config, generator, model=model, max_batch_size=max_batch_size, engine_factory=factory
    )
    pool = None
    if redis_url and samplers > 0:
        queue = RedisQueueSpec(
            url=redis_url, claim_idle_ms=claim_idle_ms, stream_prefix=stream_prefix
        )
        sampler_config = SamplerConfig(
            queue,
            workers=samplers,
            reward_address=reward,
            reward_token=config.token,
            tasks_per_call=tasks_per_call,
            seed=seed,
        )
        pool = SamplerPool(
            sampler_config,
            servicer,
            SamplerMetrics(server.metrics.registry),
            name=f"rollout-{socket.gethostname()}-{os.getpid()}",
        )
    try:
        if pool is not None:
            pool.start()
        serve_until_signal(server, "rollout", samplers=str(len(pool.workers) if pool else 0))
    finally:
        if pool is not None:
            pool.stop(grace_seconds)
        servicer.slot.close()


serve_app.command("rollout")(serve_rollout)

from skillfactory.cli.serve_ray import serve_rollout_ray  # noqa: E402 (it uses the options above)

serve_app.command("rollout-ray")(serve_rollout_ray)


def register(app: typer.Typer) -> None:
    """Add the `serve` command group."""
    app.add_typer(serve_app, name="serve")
