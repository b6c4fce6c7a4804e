"""`skillfactory serve SERVICE`: run one service of the distributed mode as a gRPC server.

When the server is ready it prints one JSON line on stdout — `{"service", "address", "metrics",
"tls", "auth"}` — so a launcher can start it on port 0 and read where it landed. Logs go to stderr
as JSON lines. SIGTERM (or Ctrl-C) shuts it down gracefully: health turns NOT_SERVING, calls in
flight finish within the grace period, and the process exits 0. The server options every service
shares are `skillfactory.cli.options`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from skillfactory.cli.options import (
    EXIT_USAGE,
    ClaimIdleOption,
    CompileOption,
    DeviceOption,
    DtypeOption,
    EngineOption,
    MaxBatchOption,
    RedisUrlOption,
    SeedOption,
    SimulatedDelayOption,
    StreamPrefixOption,
    engine_spec_from_flags,
    serve_until_signal,
    serving_options,
)
from skillfactory.cli.serve_composer import serve_composer
from skillfactory.cli.serve_ray import serve_rollout_ray
from skillfactory.engines.setup import setup_engine
from skillfactory.engines.simulated import TokenDelayEngine
from skillfactory.models.registry import ModelUnavailableError
from skillfactory.rollout.limits import GenerationLimits
from skillfactory.rollout.scoring import GroupScorer, local_scorer
from skillfactory.runspec import RedisQueueSpec

if TYPE_CHECKING:
    from skillfactory.serving.server import ServingConfig

serve_app = typer.Typer(
    name="serve",
    help="Run a service of the distributed mode (gRPC, health, metrics, graceful shutdown).",
    no_args_is_help=True,
)


@serving_options("reward")
def serve_reward(
    serving: ServingConfig,
    allow_reward_plugins: Annotated[
        bool,
        typer.Option(
            "--allow-reward-plugins",
            help="Run reward plugins (grpo.rewards naming package.module:function) that the "
            "problems name: code execution, for trusted run specs only. Without it such terms "
            "score 0 and are counted.",
        ),
    ] = False,
) -> None:
    """Serve the reward service: batch grading with the task graders."""
    from skillfactory.serving.reward import setup_reward_server  # heavy: grpc

    server = setup_reward_server(serving, allow_plugins=allow_reward_plugins)
    serve_until_signal(server, "reward")


@serving_options("rollout", max_message_mb=64.0, grace_seconds=60.0)
def serve_rollout(
    serving: ServingConfig,
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
    generators: Annotated[
        int,
        typer.Option(min=0, help="Generation worker threads taking stage-1 and eval tasks."),
    ] = 4,
    reward: Annotated[
        str, typer.Option(help="Reward service HOST:PORT for the samplers ('' grades here).")
    ] = "",
    tasks_per_call: Annotated[
        int, typer.Option(min=1, help="Rollout tasks a sampler samples in one engine call.")
    ] = 1,
    claim_idle_ms: ClaimIdleOption = 60_000,
    stream_prefix: StreamPrefixOption = "skillfactory",
    model_root: Annotated[
        list[Path] | None,
        typer.Option(
            help="A folder rollout tasks may name models and weight stores in (repeat); hub ids "
            "and short names always pass. Default: the working directory and the model cache."
        ),
    ] = None,
    max_tokens_limit: Annotated[
        int,
        typer.Option(
            min=1, help="Most new tokens a request (Generate, a queued task) may ask for."
        ),
    ] = GenerationLimits.max_tokens,
    max_n_limit: Annotated[
        int, typer.Option(min=1, help="Most completions per prompt a request may ask for.")
    ] = GenerationLimits.max_n,
    max_prompts_limit: Annotated[
        int, typer.Option(min=1, help="Most prompts one Generate call may carry.")
    ] = GenerationLimits.max_prompts,
    max_deliveries: Annotated[
        int,
        typer.Option(
            min=1,
            help="Deliveries of a queued task without an ack (it crashed or stalled every worker "
            "that took it) before it goes to the dead-letter stream.",
        ),
    ] = 5,
    simulated_token_delay_ms: SimulatedDelayOption = 0.0,
    engine: EngineOption = "transformers",
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    max_batch_size: MaxBatchOption = 64,
    compile: CompileOption = True,
    seed: SeedOption = 0,
) -> None:
    """Serve the rollout service: generation with one engine, weight reloads between requests,
    and (with --redis-url) sampler workers serving the learner's GRPO rollout tasks."""
    # heavy: torch and grpc, loaded only when serving
    from skillfactory.rollout.pool import SamplerConfig, SamplerPool
    from skillfactory.rollout.worker import SamplerMetrics
    from skillfactory.serving.reward_client import RewardClient
    from skillfactory.serving.rollout import setup_rollout_server

    spec = engine_spec_from_flags(
        engine,
        dtype=dtype,
        device=device,
        max_batch_size=max_batch_size,
        compile=compile,
        simulated_token_delay_ms=simulated_token_delay_ms,
    )

    def factory(name: str) -> Any:
        built = setup_engine(spec, name, seed=seed)
        if simulated_token_delay_ms > 0 and engine != "simulated":
            return TokenDelayEngine(built, simulated_token_delay_ms / 1000)
        return built

    try:
        generator = factory(model) if model else None
    except (ModelUnavailableError, OSError) as error:
        typer.echo(f"cannot load the model {model!r}: {error}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    limits = GenerationLimits(
        max_tokens=max_tokens_limit, max_n=max_n_limit, max_prompts=max_prompts_limit
    )
    server, servicer = setup_rollout_server(
        serving,
        generator,
        model=model,
        max_batch_size=max_batch_size,
        engine_factory=factory,
        limits=limits,
    )
    pool, client = None, None
    if redis_url and samplers + generators > 0:
        queue = RedisQueueSpec(
            url=redis_url, claim_idle_ms=claim_idle_ms, stream_prefix=stream_prefix
        )
        client = (
            RewardClient(reward, token=serving.outgoing_token, tls_ca=serving.tls_ca)
            if reward
            else None
        )
        score: GroupScorer = client if client is not None else local_scorer()
        config = SamplerConfig(
            queue,
            workers=samplers,
            tasks_per_call=tasks_per_call,
            seed=seed,
            generators=generators,
            model_roots=tuple(model_root or ()),
            limits=limits,
            max_deliveries=max_deliveries,
        )
        pool = SamplerPool(
            config,
            servicer.generate_task,
            score,
            SamplerMetrics(server.metrics.registry),
            name=f"rollout-{socket.gethostname()}-{os.getpid()}",
            generate_for=servicer.generate_for,
        )
    try:
        if pool is not None:
            pool.start()
        serve_until_signal(server, "rollout", samplers=str(len(pool.workers) if pool else 0))
    finally:
        if pool is not None:
            pool.stop(serving.grace_s)
        if client is not None:
            client.close()
        servicer.close()


serve_app.command("reward")(serve_reward)
serve_app.command("composer")(serve_composer)
serve_app.command("rollout")(serve_rollout)
serve_app.command("rollout-ray")(serve_rollout_ray)


def register(app: typer.Typer) -> None:
    """Add the `serve` command group."""
    app.add_typer(serve_app, name="serve")
