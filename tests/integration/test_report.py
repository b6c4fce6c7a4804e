"""`skillfactory report` on two real runs of the tiny model (the default chain and rl-only):
tables and embedded figures in the HTML, Markdown figure links that resolve, and the page as
headless Chromium renders it."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline import tiny_spec  # noqa: E402

from skillfactory.cli import app  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_tiny(model: Path, out: Path, name: str, **overrides: object) -> Path:
    spec = tiny_spec(model, out, name=name, **overrides)
    spec["eval"]["budget_forcing"] = {"enabled": True, "first_budget": 8, "total_budget": 16}
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    return out / name


@pytest.fixture(scope="module")
def report_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report-runs")
    runs = [run_tiny(tiny_model_dir, out, "tiny"), run_tiny(tiny_model_dir, out, "tiny-rl-only",
            baseline="rl-only")]  # fmt: skip
    result = CliRunner().invoke(app, ["report", *map(str, runs)])
    assert result.exit_code == 0, result.output
    return runs[0] / "report"


def test_html_has_the_tables_and_embedded_images(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text()
    for title in ("Accuracy across methods", "Skill usage", "Budget forcing", "Stage 1 · tiny"):
        assert title in html
    for method in ("SFT→GRPO", "rl-only GRPO", "base"):
        assert f"<td>{method}</td>" in html
    assert "the rl-only baseline skips stage data" in html
    sources = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert len(sources) == 4  # response lengths and GRPO curves of both runs
    for source in sources:
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix), source[:40]
        assert base64.b64decode(source[len(prefix) :]).startswith(PNG)
    assert "http://" not in html and "https://" not in html


def test_markdown_figure_links_resolve(report_dir: Path) -> None:
    markdown = (report_dir / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == 4
    for link in links:
        assert (report_dir / link).read_bytes().startswith(PNG)


def test_headless_chromium_renders_the_page(report_dir: Path, tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (scripts/install-os-packages.sh installs it)")
    shot = tmp_path / "report.png"
    completed = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}",
         "--window-size=1280,2000", (report_dir / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes().startswith(PNG)
