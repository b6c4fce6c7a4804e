"""`skillfactory eval SPEC.yaml`: evaluate models on the spec's eval tasks and print a table.

Results go to `<output_dir>/<run name>/eval/` (see `skillfactory.eval.harness`); the table shows,
per model and task, accuracy, #Ans, #Ref and verdict F1 of both classes, then the group means.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from skillfactory.cli.data import load_spec_or_exit
from skillfactory.cli.validate import EXIT_INVALID
from skillfactory.eval.harness import eval_dir, evaluate
from skillfactory.tasks import UnknownTaskError, get_task, use_datasets

if TYPE_CHECKING:
    from rich.table import Table

DEFAULT_LABEL = "base"
"""Label of the spec's own model when no `--model` is given."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def parse_models(options: list[str], default_model: str) -> dict[str, str]:
    """`LABEL=PATH` options (or a bare PATH, labelled by its last part) as label → model."""
    if not options:
        return {DEFAULT_LABEL: default_model}
    models: dict[str, str] = {}
    for option in options:
        label, separator, model = option.partition("=")
        if not separator:
            label, model = _label_of(option), option
        if not label or not model:
            raise typer.BadParameter(f"{option!r}: expected LABEL=PATH", param_hint="--model")
        if label in models:
            raise typer.BadParameter(f"label {label!r} given twice", param_hint="--model")
        models[label] = model
    return models


def _label_of(model: str) -> str:
    """A folder-safe label from a path or hub id: its last part."""
    last = model.rstrip("/").rsplit("/", 1)[-1]
    return _UNSAFE.sub("_", last).lstrip("._-") or "model"


def check_tasks(names: list[str]) -> None:
    """Exit 2 naming the first unknown task."""

    for name in names:
        try:
            get_task(name)
        except UnknownTaskError as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(EXIT_INVALID) from None


def results_table(summary: dict[str, Any], labels: list[str]) -> Table:
    """Model × task rows, then each model's group means."""

    table = Table(title="Evaluation")
    for name, justify in (("model", "left"), ("task", "left"), ("samples", "right"),
                          ("accuracy", "right"), ("#Ans", "right"), ("#Ref", "right"),
                          ("F1 correct", "right"), ("F1 incorrect", "right"),
                          ("tokens", "right"), ("forcing Δ", "right")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for label in labels:
        model = summary[label]
        for task, metrics in model["tasks"].items():
            table.add_row(label, task, str(metrics["n_samples"]), *_cells(metrics))
        for group, metrics in model["groups"].items():
            table.add_row(label, f"[italic]{group}[/]", "", *_cells(metrics))
        table.add_section()
    return table


def _cells(metrics: dict[str, Any]) -> list[str]:
    forcing = metrics.get("budget_forcing")
    return [
        f"{metrics['accuracy']:.3f}",
        f"{metrics['n_answers']:.2f}",
        f"{metrics['n_reflections']:.2f}",
        f"{metrics['verdict_f1_correct']:.3f}",
        f"{metrics['verdict_f1_incorrect']:.3f}",
        f"{metrics['mean_tokens']:.1f}",
        f"{forcing['difference']:+.3f}" if forcing else "–",
    ]


def run_eval(
    spec: Annotated[Path, typer.Argument(help="Run spec YAML file.")],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="LABEL=PATH (path, hub id or short name) to evaluate; repeat for several. "
            "Default: the spec's model as 'base'.",
        ),
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", help="Eval task; repeat for several. Default: the spec's."),
    ] = None,
    num_problems: Annotated[
        int | None,
        typer.Option("--num-problems", min=1, help="Test problems per task. Default: the spec's."),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir", help="Override the spec's output_dir (results: <dir>/<name>/eval)."
        ),
    ] = None,
) -> None:
    """Sample every model on held-out test problems; write records and metrics, print a table."""
    run_spec = load_spec_or_exit(spec, output_dir)
    models = parse_models(model or [], run_spec.model)
    tasks = list(task) if task else list(run_spec.eval.tasks)
    use_datasets(run_spec.datasets)
    check_tasks(tasks)

    errors = Console(stderr=True)

    def on_task(label: str, name: str, metrics: dict[str, Any]) -> None:
        errors.print(
            f"{label} · {name}: accuracy {metrics['accuracy']:.3f} ({metrics['n_samples']} samples)"
        )

    out = eval_dir(run_spec)
    summary = evaluate(
        run_spec, models, out, tasks=tasks, num_problems=num_problems, on_task=on_task
    )
    Console().print(results_table(summary, list(models)))
    typer.echo(f"evaluation written to {out}", err=True)


def register(app: typer.Typer) -> None:
    """Add the `eval` command."""
    app.command(name="eval")(run_eval)
