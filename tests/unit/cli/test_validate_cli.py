"""`skillfactory validate` as a user runs it: a real process, exit codes, messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _validate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skillfactory.cli", "validate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_valid_spec_prints_ok() -> None:
    result = _validate(str(REPO / "examples" / "paper-countdown.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


def test_show_prints_every_default(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: tiny\n")
    result = _validate(str(spec), "--show")
    assert result.returncode == 0
    assert "repetition_penalty: 1.1" in result.stdout and result.stdout.endswith("OK\n")


def test_invalid_spec_lists_each_problem_and_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("modle: x\ngrpo: {loss: l2}\ndata: {sampling: {top_p: 3}}\n")
    result = _validate(str(spec))
    assert result.returncode == 2
    lines = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert len(lines) == 3
    assert any(line.startswith("modle: unknown field; allowed: name, model") for line in lines)
    assert any(
        line.startswith("grpo.loss:") and "'token-mean'" in line and "'l2'" in line
        for line in lines
    )
    assert any(line.startswith("data.sampling.top_p:") and "(got 3)" in line for line in lines)


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = _validate(str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "no such file" in result.stderr
