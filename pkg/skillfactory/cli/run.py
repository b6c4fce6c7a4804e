"""`skillfactory run SPEC.yaml`: the spec's stages in order, in one process (embedded mode)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from skillfactory.cli.data import load_spec_or_exit
from skillfactory.cli.validate import EXIT_INVALID
from skillfactory.models.registry import ModelUnavailableError
from skillfactory.report.collect import method_name
from skillfactory.runspec import RunSpec
from skillfactory.stages.events import (
    DataProgress,
    EvalTaskDone,
    EventCallback,
    GRPOStep,
    StageEvent,
    StageFinished,
    StageStarted,
)
from skillfactory.train.sft import EmptySFTDataset

GROUP_HEADERS = {
    "in_domain": "in-dom",
    "harder": "harder",
    "out_of_domain": "OOD",
    "overall": "all",
}


def comparison_table(summary: dict[str, Any], spec: RunSpec) -> Any:
    """One row per model (named as the report names them): accuracy by task group, then the
    skill columns (#Ans, #Ref, reflect share, verdict F1) on the in-domain tasks, where SFT
    installs the structure (all tasks when no group is in-domain)."""

    names = {label: method_name(spec.baseline, label, spec.data.composition) for label in summary}
    groups = [g for g in GROUP_HEADERS if any(g in model["groups"] for model in summary.values())]
    skill_group = "in_domain" if "in_domain" in groups else "overall"
    where = "in-domain tasks" if skill_group == "in_domain" else "all tasks"
    table = Table(
        title=f"{' / '.join(names.values())} on held-out problems",
        caption=f"accuracy per task group; #Ans, #Ref, refl (share of responses with a <reflect> "
        f"holding a <verdict>) and verdict F1 (correct ✓ / incorrect ✗) on the {where}",
    )
    table.add_column("model", no_wrap=True)
    for group in groups:
        table.add_column(GROUP_HEADERS[group], justify="right")
    for column in ("#Ans", "#Ref", "refl", "F1 ✓", "F1 ✗"):
        table.add_column(column, justify="right")
    for label, name in names.items():
        model_groups = summary[label]["groups"]
        skills = model_groups.get(skill_group, {})
        table.add_row(
            name,
            *(f"{model_groups[g]['accuracy']:.3f}" if g in model_groups else "–" for g in groups),
            f"{skills.get('n_answers', 0.0):.2f}",
            f"{skills.get('n_reflections', 0.0):.2f}",
            f"{skills.get('reflect_share', 0.0):.0%}",
            f"{skills.get('verdict_f1_correct', 0.0):.3f}",
            f"{skills.get('verdict_f1_incorrect', 0.0):.3f}",
        )
    return table


def progress_printer() -> EventCallback:
    """An event callback that prints one line per stage event on stderr."""
    console = Console(stderr=True)

    def on_event(event: StageEvent) -> None:
        if isinstance(event, StageStarted):
            console.print(f"[bold]{event.stage}[/] started")
        elif isinstance(event, DataProgress):
            console.print(f"{event.stage}: {event.done}/{event.total} problems")
        elif isinstance(event, GRPOStep):
            step = event.record
            staleness = {str(k): v for k, v in sorted(step.staleness.items())}
            console.print(
                f"grpo: version {step.version} · reward {step.reward_mean:.3f} · "
                f"loss {step.loss:+.4f} · staleness {staleness} · {step.seconds:.1f} s"
            )
        elif isinstance(event, EvalTaskDone):
            accuracy = event.metrics["accuracy"]
            console.print(f"eval: {event.model} · {event.task}: {accuracy:.3f}")
        elif isinstance(event, StageFinished):
            console.print(f"[bold]{event.stage}[/] finished in {event.seconds:.0f} s")

    return on_event


def run(
    spec: Annotated[Path, typer.Argument(help="Run spec YAML file.")],
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Override the spec's output_dir.")
    ] = None,
) -> None:
    """Run the spec's stages in order (data → sft → grpo → eval); resumes an interrupted run."""
    run_spec = load_spec_or_exit(spec, output_dir)

    # deferred: heavy or optional (torch)
    from skillfactory.stages.pipeline import RESULT_FILE, Pipeline

    try:
        pipeline = Pipeline(run_spec, on_event=progress_printer())
    except ModelUnavailableError as error:
        typer.echo(f"model: {error}", err=True)
        raise typer.Exit(EXIT_INVALID) from None
    try:
        results = pipeline.run()
    except EmptySFTDataset as error:
        typer.echo(
            f"sft: {error}. Stage 1 composed no silver trace: sample more problems or samples "
            "(data.num_problems, data.samples_per_variant), or set sft.dataset.",
            err=True,
        )
        raise typer.Exit(1) from None
    if "eval" in results:
        Console().print(comparison_table(results["eval"], pipeline.spec))
    else:
        typer.echo(json.dumps(results, indent=2, sort_keys=True, default=str))
    typer.echo(f"run written to {pipeline.dir} ({RESULT_FILE})", err=True)


def register(app: typer.Typer) -> None:
    """Add the `run` command."""
    app.command()(run)
