"""`skillfactory data SPEC.yaml`: stage 1 alone — build the silver SFT dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from skillfactory.cli.validate import EXIT_INVALID
from skillfactory.engines.setup import engine_batch_rows, setup_engine
from skillfactory.runspec import InvalidRunSpec, RunSpec, load_run_spec
from skillfactory.stages.data import SFT_FILE, Stage1, data_dir, read_records


def load_spec_or_exit(spec_path: Path, output_dir: Path | None) -> RunSpec:
    """The validated spec (with `output_dir` overridden when given); exit 2 with the problems."""
    try:
        spec = load_run_spec(spec_path)
    except (InvalidRunSpec, OSError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    if output_dir is not None:
        spec = spec.model_copy(update={"output_dir": str(output_dir)})
    return spec


def run_data_stage(spec: RunSpec) -> dict[str, Any]:
    """Start the engine the spec names and run stage 1 with a progress bar."""

    engine = setup_engine(spec.engine, spec.model, spec.seed)
    rows = engine_batch_rows(spec.engine)
    stage = Stage1(spec, engine, max_batch_rows=rows)
    with Progress(
        TextColumn("stage 1 [bold]{task.fields[task_name]}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("problems · {task.fields[rate]:.2f} samples/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as progress:
        bar = progress.add_task(
            "data", total=spec.data.num_problems, task_name=spec.data.task, rate=0.0
        )
        sampled = 0

        def on_progress(done: int, total: int, samples: int) -> None:
            nonlocal sampled
            sampled += samples
            elapsed = progress.tasks[0].elapsed or 1e-9
            progress.update(bar, completed=done, total=total, rate=sampled / elapsed)

        summary = stage.run(on_progress)
    engine.close()
    return summary


def data(
    spec: Annotated[Path, typer.Argument(help="Run spec YAML file.")],
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Override the spec's output_dir.")
    ] = None,
    show: Annotated[int, typer.Option("--show", help="Print this many traces at the end.")] = 0,
) -> None:
    """Stage 1: sample, grade, reflect, filter by verdict and compose silver traces."""
    run_spec = load_spec_or_exit(spec, output_dir)
    summary = run_data_stage(run_spec)

    typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    for number, record in enumerate(read_records(data_dir(run_spec) / SFT_FILE), start=1):
        if number > show:
            break
        question, trace = (m["content"] for m in record["messages"])
        typer.echo(
            f"\n--- trace {number} ({record['id']}) ---\n[user]\n{question}\n[assistant]\n{trace}"
        )
    typer.echo(f"dataset written to {data_dir(run_spec)}", err=True)


def register(app: typer.Typer) -> None:
    """Add the `data` command."""
    app.command()(data)
