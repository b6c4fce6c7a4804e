"""The written report: self-contained HTML, Markdown whose figures resolve, provenance, and the
`skillfactory report` command."""

from __future__ import annotations

import base64
import os
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from run_folders import build_run  # noqa: E402

from skillfactory.cli import app  # noqa: E402
from skillfactory.report import write_report  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def image_sources(html: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]*)"', html)


def markdown_links(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_report_embeds_figures_and_links_markdown(tmp_path: Path) -> None:
    runs = [build_run(tmp_path, "sf", forcing=True), build_run(tmp_path, "rl", "rl-only")]
    files = write_report(runs, tmp_path / "out")
    html = files.html.read_text()
    sources = image_sources(html)
    assert len(sources) == 4  # lengths and GRPO curves of each run
    for source in sources:
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        assert base64.b64decode(source[len(prefix) :]).startswith(PNG)
    assert "http://" not in html and "https://" not in html and "<link" not in html
    for title in ("Accuracy across methods", "Skill usage", "Budget forcing", "Stage 1 · sf"):
        assert title in html
    assert "Ablations · /models/tiny · countdown-3" in html  # sf and rl: variants of one base
    assert html.count("<table>") == 8  # runs, accuracy, skills, ablations, forcing, 2 training,
    # stage 1
    markdown = files.markdown.read_text()
    links = markdown_links(markdown)
    assert len(links) == 4
    for link in links:
        assert (files.markdown.parent / link).read_bytes().startswith(PNG)
    assert sorted(files.figures) == sorted(files.markdown.parent / link for link in links)


def test_every_table_and_figure_names_its_run_and_spec(tmp_path: Path) -> None:
    run = build_run(tmp_path, "sf")
    files = write_report([run], tmp_path / "out")
    html = files.html.read_text()
    provenance = f"run sf ({os.path.relpath(run)}) · baseline skillfactory · model /models/tiny · task countdown-3"
    tables, captions = html.count("<table>"), html.count("<figcaption>")
    assert html.count(provenance) == tables - 1 + captions  # the runs table is the provenance
    for caption in re.findall(r"<figcaption>(.*?)</figcaption>", html):
        assert provenance in caption


def test_numbers_in_the_report_are_the_json_values(tmp_path: Path) -> None:
    files = write_report([build_run(tmp_path, "sf")], tmp_path / "out")
    html, markdown = files.html.read_text(), files.markdown.read_text()
    # sft on countdown-4: accuracy 0.125 + 0.1 + 0.01; grpo overall accuracy 0.111 + 0.2
    for text in (html, markdown):
        assert "0.235" in text and "0.311" in text


def test_missing_pieces_are_said_not_raised(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    partial = build_run(tmp_path, "partial", stages=("data",))
    files = write_report([empty, partial], tmp_path / "out")
    html = files.html.read_text()
    assert image_sources(html) == []
    assert "No run has evaluation results" in html
    assert "No run was evaluated with budget forcing" in html
    assert "missing grpo/steps.jsonl: stage grpo has not finished" in html
    assert "Stage 1 · partial" in html
    assert "missing run.json" in files.markdown.read_text()


def test_cli_writes_to_the_first_run_folder_by_default(tmp_path: Path) -> None:
    first, second = build_run(tmp_path, "a"), build_run(tmp_path, "b", "star")
    result = CliRunner().invoke(app, ["report", str(first), str(second)])
    assert result.exit_code == 0, result.output
    html = (first / "report" / "report.html").read_text()
    assert "STaR-SFT→GRPO" in html and "SFT→GRPO" in html
    assert (first / "report" / "report.md").exists()
    assert "report written to" in result.output


def test_cli_output_option_and_unknown_folder(tmp_path: Path) -> None:
    run = build_run(tmp_path, "a")
    result = CliRunner().invoke(app, ["report", str(run), "--output", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "report.html").exists()
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    warned = CliRunner().invoke(app, ["report", str(empty)])
    assert warned.exit_code == 0 and "no stage results found" in warned.output


def test_the_report_names_run_folders_relative_to_where_it_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report one shares carries no machine's absolute paths (issue 16)."""
    monkeypatch.chdir(tmp_path)
    run = build_run(tmp_path / "runs", "sf", forcing=True)
    files = write_report([run], tmp_path / "out")
    html, markdown = files.html.read_text(), files.markdown.read_text()
    assert "runs/sf" in html and "runs/sf" in markdown
    assert str(tmp_path) not in html and str(tmp_path) not in markdown
