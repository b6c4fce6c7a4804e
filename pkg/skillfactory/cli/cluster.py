"""`skillfactory up` / `skillfactory down`: the local cluster (Redis and every service as processes
on loopback, supervised; see `skillfactory.cluster.local`).

    skillfactory up [--samplers 2] [--dir .skillfactory/cluster]
    skillfactory submit SPEC.yaml      # the client commands find the local cluster by themselves
    skillfactory down
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skillfactory.cluster.local import ClusterConfig, ClusterError, cluster_dir
from skillfactory.cluster.local import down as stop
from skillfactory.cluster.local import up as start

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Cluster folder (state, logs, Redis data, runs' state); default: "
        "$SKILLFACTORY_CLUSTER_DIR or .skillfactory/cluster.",
    ),
]


def up(
    samplers: Annotated[
        int, typer.Option(min=1, help="Rollout services, each with a sampler worker.")
    ] = 2,
    directory: DirOption = None,
    claim_idle_ms: Annotated[
        int, typer.Option(min=1, help="A silent sampler's tasks are reclaimed after this long.")
    ] = 60_000,
    threads: Annotated[int, typer.Option(min=1, help="Torch threads of each service.")] = 1,
    model: Annotated[
        str, typer.Option(help="Model the rollout services load at start ('' = on demand).")
    ] = "",
    learner_procs: Annotated[
        int, typer.Option(min=1, help="Learner processes (torchrun): SFT and GRPO train on all.")
    ] = 1,
    simulated_token_delay_ms: Annotated[
        float,
        typer.Option(
            min=0, help="SIMULATION: rollout engine calls last at least this many ms per token."
        ),
    ] = 0.0,
    engine: Annotated[
        str,
        typer.Option(
            help="Engine of the rollout services: transformers, vllm, or simulated (SIMULATION: "
            "text a function of prompt and seed, no model)."
        ),
    ] = "transformers",
    data_root: Annotated[
        Path | None,
        typer.Option(
            help="Run specs' output_dir must lie inside this folder; default: this directory."
        ),
    ] = None,
    max_samplers: Annotated[
        int,
        typer.Option(
            min=0,
            help="Autoscale the rollout services between --samplers and this many with the "
            "queue's backlog (0: fixed).",
        ),
    ] = 0,
    tasks_per_replica: Annotated[
        int, typer.Option(min=1, help="Backlog one rollout service absorbs (autoscaling).")
    ] = 16,
    scale_down_cooldown_s: Annotated[
        float, typer.Option(min=0, help="Seconds of lower need before scaling in.")
    ] = 60.0,
    gpus: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="GPUs to spread the processes over (CUDA_VISIBLE_DEVICES: the learner first, one "
            "GPU per rollout service after); default: every GPU nvidia-smi lists; 0: none.",
        ),
    ] = None,
) -> None:
    """Start Redis and every service on loopback; prints the learner address and token."""
    if engine not in ("transformers", "vllm", "simulated"):
        typer.echo(f"--engine {engine!r}: transformers, vllm or simulated", err=True)
        raise typer.Exit(2)

    config = ClusterConfig(
        dir=cluster_dir(directory),
        samplers=samplers,
        claim_idle_ms=claim_idle_ms,
        threads=threads,
        model=model,
        simulated_token_delay_ms=simulated_token_delay_ms,
        learner_procs=learner_procs,
        engine=engine,
        gpus=gpus,
        max_samplers=max_samplers,
        data_root=str((data_root or Path.cwd()).resolve()),
        tasks_per_replica=tasks_per_replica,
        scale_down_cooldown_s=scale_down_cooldown_s,
    )
    try:
        state = start(config)
    except ClusterError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"learner:  {state.learner}")
    typer.echo(f"token:    {Path(state.token_file).read_text().strip()}  (in {state.token_file})")
    typer.echo(f"redis:    {state.redis_url}")
    for name, url in state.metrics_urls().items():
        typer.echo(f"metrics:  {name:<10} {url}")
    typer.echo("submit a run with `skillfactory submit SPEC.yaml`; stop with `skillfactory down`")


def down(directory: DirOption = None) -> None:
    """Stop the local cluster (services gracefully, then Redis)."""

    try:
        stopped = stop(cluster_dir(directory))
    except ClusterError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    typer.echo("stopped" if stopped else "no cluster was running")


def register(app: typer.Typer) -> None:
    """Add `up` and `down`."""
    app.command("up")(up)
    app.command("down")(down)
