"""`skillfactory tasks list` and `skillfactory tasks generate`: the task registry on the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from skillfactory.tasks import TASK_NAMES, UnknownTaskError, get_task
from skillfactory.tasks.dataset_rows import DatasetUnavailableError

tasks_app = typer.Typer(help="List tasks and write their problems as JSONL.", no_args_is_help=True)


@tasks_app.command("list")
def list_tasks() -> None:
    """Print every task name, one per line."""

    for name in TASK_NAMES:
        typer.echo(name)


@tasks_app.command("generate")
def generate(
    task: Annotated[str, typer.Option(help="Task name, e.g. countdown-4 (see `tasks list`).")],
    n: Annotated[int, typer.Option(min=0, help="How many problems.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same problems.")] = 0,
    split: Annotated[
        str | None,
        typer.Option(help="Split (generated: any name; datasets: e.g. train, test, validation)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="JSONL file to write; standard output when omitted.")
    ] = None,
) -> None:
    """Write `n` problems of a task as JSONL records (id, task, question, answer, task fields)."""

    try:
        chosen = get_task(task)
        problems = chosen.problems(n, seed) if split is None else chosen.problems(n, seed, split)
    except (UnknownTaskError, DatasetUnavailableError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    lines = "".join(json.dumps(p.to_record(), ensure_ascii=False) + "\n" for p in problems)
    if output is None:
        sys.stdout.write(lines)
    else:
        output.write_text(lines, encoding="utf-8")


def register(app: typer.Typer) -> None:
    """Add the `tasks` command group."""
    app.add_typer(tasks_app, name="tasks")
