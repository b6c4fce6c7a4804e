"""`skillfactory report`: the paper's tables and figures for one or more run folders.

    write_report([run_dir, ...], out_dir) → out_dir/report.html, out_dir/report.md, PNGs

`collect` reads run folders (anything may be missing), `tables` and `figures` compute the content
from the files, `sections` orders it, `render` writes the self-contained HTML and the Markdown.

Runs that are variants of one base spec (the same spec but for the baseline, the stage-1
composition, the SFT dataset and the run's name and folder: what `skillfactory suite run` makes
of a suite such as `examples/paper/ablations.yaml`, or separate runs of one spec's variants) get
an "Ablations" table in the paper's layout: the base model, then each variant after SFT and after
SFT→GRPO (rl-only: GRPO) in the paper's order (`skillfactory.ablation.PAPER_ORDER`: baselines, the
method, its ablations, the released formats); columns the accuracy per eval task grouped
in-domain, harder, out-of-domain, the group means, then the in-domain share of responses that
reflect with a verdict and verdict F1 of both classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from skillfactory.report.collect import Run, read_run
from skillfactory.report.figures import Figure
from skillfactory.report.render import write_html, write_markdown
from skillfactory.report.sections import build_sections

HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
TITLE = "SkillFactory report"


@dataclass
class ReportFiles:
    """What `write_report` wrote."""

    html: Path
    markdown: Path
    figures: list[Path]
    runs: list[Run]


def write_report(run_dirs: Sequence[Path], out_dir: Path) -> ReportFiles:
    """Read every run folder and write the HTML page, the Markdown file and its PNGs to
    `out_dir`."""

    runs = [read_run(Path(path)) for path in run_dirs]
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = build_sections(runs, out_dir)
    title = f"{TITLE}: {', '.join(run.name for run in runs)}"
    html, markdown = out_dir / HTML_FILE, out_dir / MARKDOWN_FILE
    write_html(html, title, sections)
    write_markdown(markdown, title, sections)
    figures = [b.path for s in sections for b in s.blocks if isinstance(b, Figure)]
    return ReportFiles(html, markdown, figures, runs)
