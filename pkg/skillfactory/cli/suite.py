"""`skillfactory suite expand|run|report SUITE.yaml`: the ablation suite (`skillfactory.ablation`).

- `expand` checks the suite, lists its variants and, with `--out`, writes one run spec per
  variant (for `skillfactory run` or `skillfactory submit`);
- `run` runs every variant in turn (data → SFT → GRPO → eval, the base's seeds), handing stage 1's
  samples from one variant to the next, then writes the report of all of them;
- `report` writes that report again from the run folders there are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from skillfactory.ablation import (
    InvalidSuite,
    expand_suite,
    load_suite,
    share_stage1,
    write_specs,
)
from skillfactory.cli.run import progress_printer
from skillfactory.cli.validate import EXIT_INVALID
from skillfactory.models.registry import ModelUnavailableError
from skillfactory.report import write_report
from skillfactory.runspec import RunSpec
from skillfactory.train.sft import EmptySFTDataset

suite_app = typer.Typer(
    help="The ablation suite: named variants of one base spec, each data → SFT → GRPO → eval.",
    no_args_is_help=True,
)

SuiteArgument = Annotated[
    Path, typer.Argument(help="Suite YAML file (e.g. examples/paper/ablations.yaml).")
]
REPORT_FOLDER = "report"


def specs_or_exit(suite_path: Path) -> tuple[str, list[RunSpec]]:
    """The suite's name and its per-variant run specs; exit 2 naming the problem if invalid."""
    try:
        suite, base = load_suite(suite_path)
        return suite.name, expand_suite(suite, base)
    except InvalidSuite as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_INVALID) from None


def suite_folder(specs: list[RunSpec]) -> Path:
    """`<output_dir>/<suite name>/`, where every variant's run folder is."""
    return Path(specs[0].output_dir)


def variants_table(specs: list[RunSpec]) -> Table:
    table = Table(
        "variant",
        "changes",
        "seed",
        title="Suite",
        caption=f"run folders: {suite_folder(specs)}/<variant>/",
    )
    for spec in specs:
        if spec.baseline != "skillfactory":
            changes = f"baseline {spec.baseline}"
        elif spec.data.composition != "skillfactory":
            changes = f"composition {spec.data.composition}"
        else:
            changes = "– (the method)"
        table.add_row(spec.name, changes, str(spec.seed))
    return table


@suite_app.command("expand")
def expand(
    suite: SuiteArgument,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write <variant>.yaml run specs to this folder.")
    ] = None,
) -> None:
    """Check the suite and list its variants; with --out, write one run spec per variant."""
    _, specs = specs_or_exit(suite)
    Console().print(variants_table(specs))
    if out is not None:
        for path in write_specs(specs, out):
            typer.echo(f"wrote {path}", err=True)
    typer.echo("OK")


@suite_app.command("run")
def run_suite(
    suite: SuiteArgument,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only these variants (repeatable).")
    ] = None,
) -> None:
    """Run every variant in the suite's order (each resumes where it stopped), then write the
    report of all of them to <output_dir>/<suite name>/report/."""
    _, specs = specs_or_exit(suite)
    names = [spec.name for spec in specs]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        typer.echo(f"--only: unknown variant(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
        raise typer.Exit(EXIT_INVALID)

    # deferred: heavy or optional (torch)
    from skillfactory.stages.pipeline import Pipeline

    failed: list[str] = []
    for index, spec in enumerate(specs):
        if only and spec.name not in only:
            continue
        typer.echo(f"── variant {spec.name} ({index + 1}/{len(specs)})", err=True)
        shared = share_stage1(spec, specs[:index])
        if shared is not None:
            typer.echo(f"stage 1: samples taken from {shared}; composing only", err=True)
        try:
            Pipeline(spec, on_event=progress_printer()).run()
        except ModelUnavailableError as error:
            typer.echo(f"model: {error}", err=True)
            raise typer.Exit(EXIT_INVALID) from None
        except EmptySFTDataset as error:
            typer.echo(f"{spec.name}: sft: {error}; going on with the next variant", err=True)
            failed.append(spec.name)
    write_suite_report(specs)
    if failed:
        typer.echo(f"variants without a result: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


@suite_app.command("report")
def report_suite(
    suite: SuiteArgument,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", help="Folder of the report. Default: <output_dir>/<suite>/report."
        ),
    ] = None,
) -> None:
    """Write the report of the suite's run folders that exist (the ablation table among it)."""
    _, specs = specs_or_exit(suite)
    write_suite_report(specs, output)


def write_suite_report(specs: list[RunSpec], output: Path | None = None) -> None:
    folders = [Path(spec.output_dir) / spec.name for spec in specs]
    present = [folder for folder in folders if folder.is_dir()]
    if not present:
        typer.echo("no run folder of the suite exists yet (run `skillfactory suite run`)", err=True)
        raise typer.Exit(1)
    for folder in folders:
        if folder not in present:
            typer.echo(f"{folder}: not run yet; left out of the report", err=True)
    files = write_report(present, output or suite_folder(specs) / REPORT_FOLDER)
    typer.echo(f"report written to {files.html} and {files.markdown}", err=True)


def register(app: typer.Typer) -> None:
    """Add the `suite` commands."""
    app.add_typer(suite_app, name="suite")
