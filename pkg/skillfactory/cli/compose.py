"""`skillfactory compose`: graded samples with reflections → silver SFT traces."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from skillfactory.compose import (
    DEFAULT_MAX_SAMPLES_PER_TRACE,
    DEFAULT_REPEATS_PER_QUESTION,
    DEFAULT_VARIANT,
    VARIANTS,
    ComposeOptions,
    ComposeSummary,
    RecordError,
    compose_problem,
    dump_record,
    parse_samples_line,
)

INVALID_INPUT_EXIT = 2


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("composing"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def _decode(raw: bytes, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RecordError(number, "<record>", f"not UTF-8 ({error.reason})") from error


def compose_file(
    input_path: Path, output_path: Path, options: ComposeOptions, console: Console
) -> ComposeSummary:
    """Compose every problem of a JSONL file into `output_path` (written whole or not at all).

    Raises `RecordError` on the first bad record; the partial output is then removed.
    """
    summary = options.new_summary()
    partial = output_path.with_name(output_path.name + ".partial")
    try:
        with (
            input_path.open("rb") as source,
            partial.open("w", encoding="utf-8", newline="\n") as sink,
            _progress(console) as progress,
        ):
            task = progress.add_task("compose", total=os.fstat(source.fileno()).st_size)
            for number, raw in enumerate(source, start=1):
                progress.advance(task, len(raw))
                line = _decode(raw, number)
                if not line.strip():
                    continue
                item = parse_samples_line(line, number)
                for record in compose_problem(item, options, summary):
                    sink.write(dump_record(record) + "\n")
        partial.replace(output_path)
    finally:
        partial.unlink(missing_ok=True)
    return summary


def summary_table(summary: dict[str, Any]) -> Table:
    """The summary as a two-column table."""
    table = Table(title="compose summary", show_header=False)
    for key, value in summary.items():
        if key == "verdict_filter":
            for label, counts in value.items():
                text = ", ".join(f"{name} {count}" for name, count in counts.items())
                table.add_row(f"verdict filter ({label} samples)", text)
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{name}: {count}" for name, count in value.items()) or "-"
        table.add_row(key.replace("_", " "), str(value))
    return table


def compose_command(
    input: Annotated[
        Path, typer.Option("--input", help="graded samples JSONL, one problem a line")
    ],
    output: Annotated[Path, typer.Option("--output", help="SFT chat records JSONL to write")],
    seed: Annotated[int, typer.Option("--seed", help="seed of every random choice")],
    variant: Annotated[
        str, typer.Option("--variant", help=f"one of: {', '.join(VARIANTS)}")
    ] = DEFAULT_VARIANT,
    max_samples_per_trace: Annotated[
        int,
        typer.Option(
            "--max-samples-per-trace",
            min=1,
            help="L_max of Algorithm 1; the number of responses N of the released-* formats",
        ),
    ] = DEFAULT_MAX_SAMPLES_PER_TRACE,
    repeats_per_question: Annotated[
        int,
        typer.Option(
            "--repeats-per-question",
            min=1,
            help="released-* formats: how many times each format is built per problem",
        ),
    ] = DEFAULT_REPEATS_PER_QUESTION,
    distinct_prompt_variants: Annotated[
        bool,
        typer.Option(
            "--distinct-prompt-variants",
            help="released-* formats: the samples of a trace come from different solve prompts",
        ),
    ] = False,
    vary_response_count: Annotated[
        bool,
        typer.Option(
            "--vary-response-count",
            help="released-* formats: N uniform in [2, L] per *C, *C*IC and *CC trace",
        ),
    ] = False,
    summary_path: Annotated[
        Path | None, typer.Option("--summary", help="also write the summary as JSON here")
    ] = None,
) -> None:
    """Filter reflections by verdict and assemble silver traces (Algorithm 1, an ablation or a
    released format) into SFT chats."""
    console = Console(stderr=True)
    if variant not in VARIANTS:
        console.print(f"error: unknown --variant {variant!r}; allowed: {', '.join(VARIANTS)}")
        raise typer.Exit(INVALID_INPUT_EXIT)
    if not input.is_file():
        console.print(f"error: --input {str(input)!r} is not a file")
        raise typer.Exit(INVALID_INPUT_EXIT)
    options = ComposeOptions(
        variant,
        seed,
        max_samples_per_trace,
        repeats_per_question,
        distinct_prompt_variants,
        vary_response_count,
    )
    try:
        summary = compose_file(input, output, options, console).to_dict()
    except RecordError as error:
        console.print(f"error: {input}: {error}", markup=False, highlight=False)
        raise typer.Exit(INVALID_INPUT_EXIT) from error
    Console().print(summary_table(summary))
    if summary_path is not None:
        summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def register(app: typer.Typer) -> None:
    """Add `compose` to the command line."""
    app.command("compose")(compose_command)
