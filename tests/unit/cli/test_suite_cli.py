"""`skillfactory suite expand|report`: the suite's specs written out, and its report from the run
folders there are (the suite's runs themselves are the pipeline's, tested elsewhere)."""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "report"))
from run_folders import build_run  # noqa: E402

from skillfactory.cli import app  # noqa: E402
from skillfactory.runspec import load_run_spec  # noqa: E402


def write_suite(tmp_path: Path) -> Path:
    (tmp_path / "base.yaml").write_text(f"name: base\nmodel: tiny\noutput_dir: {tmp_path}\n")
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\nbase: base.yaml\nvariants: [rl-only, skillfactory, no-reflection]\n")
    return suite


def test_expand_writes_one_valid_spec_per_variant(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["suite", "expand", str(write_suite(tmp_path)), "--out", str(tmp_path / "specs")]
    )
    assert result.exit_code == 0, result.output
    specs = sorted((tmp_path / "specs").glob("*.yaml"))
    assert [p.stem for p in specs] == ["no-reflection", "rl-only", "skillfactory"]
    assert {load_run_spec(p).output_dir for p in specs} == {str(tmp_path / "s")}


def test_a_bad_suite_exits_2(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\nbase: base.yaml\nvariants: [nope]\n")
    result = CliRunner().invoke(app, ["suite", "expand", str(suite)])
    assert result.exit_code == 2 and "unknown variant 'nope'" in result.output


def test_report_lays_out_the_runs_there_are(tmp_path: Path) -> None:
    suite = write_suite(tmp_path)
    build_run(tmp_path / "s", "rl-only", "rl-only")
    build_run(tmp_path / "s", "skillfactory", offset=0.01)
    result = CliRunner().invoke(app, ["suite", "report", str(suite)])
    assert result.exit_code == 0, result.output
    assert "no-reflection: not run yet" in result.output
    markdown = (tmp_path / "s" / "report" / "report.md").read_text()
    assert "\n## Ablations\n" in markdown
