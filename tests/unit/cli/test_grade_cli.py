"""`skillfactory grade`, run through the real CLI on temporary files with good and bad records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from skillfactory.cli import app
from skillfactory.tasks import get_task

runner = CliRunner()


def record(task: str, problem: dict[str, Any], response: str) -> str:
    return json.dumps({"task": task, "problem": problem, "response": response})


def test_grade_good_and_bad_records(tmp_path: Path) -> None:
    countdown = get_task("countdown-4").problems(2)[0].to_record()
    csqa = get_task("csqa").problems(1)[0].to_record()
    lines = [
        record("countdown-4", countdown, f"work <answer>{countdown['answer']}</answer>"),
        record("countdown-4", countdown, "<answer>__import__('os').system('x')</answer>"),
        record("csqa", csqa, f"<answer>({csqa['answer']})</answer>"),
        "{not json",
        "",
        record("chess", countdown, "<answer>e4</answer>"),
        json.dumps({"task": "countdown-4", "problem": countdown}),
        record("countdown-4", {"id": "x", "question": "q", "answer": "1"}, "<answer>1</answer>"),
        record("countdown-4", countdown, "no answer"),
        "[1, 2]",
    ]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["grade", "--input", str(source), "--output", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 9  # the blank line is skipped
    assert [row["correct"] for row in rows] == [True, False, True] + [False] * 6
    assert rows[0]["answer"] == countdown["answer"] and "error" not in rows[0]
    assert rows[1]["answer"] == "__import__('os').system('x')"
    assert rows[7]["answer"] is None and "error" not in rows[7]
    errors = {i: row["error"] for i, row in enumerate(rows) if "error" in row}
    assert sorted(errors) == [3, 4, 5, 6, 8]
    assert "invalid JSON" in errors[3]
    assert "unknown task 'chess'" in errors[4]
    assert "missing field 'response'" in errors[5]
    assert "missing field 'numbers'" in errors[6]
    for line_number in (4, 6, 7, 8, 10):
        assert f"line {line_number}:" in result.stderr
    assert "graded 4, correct 2, errors 5" in result.stderr


def test_grade_round_trip_for_every_task(tmp_path: Path) -> None:
    from skillfactory.tasks import TASK_NAMES

    lines = []
    for name in TASK_NAMES:
        problem = get_task(name).problems(1, seed=2)[0].to_record()
        lines.append(record(name, problem, f"<answer>{problem['answer']}</answer>"))
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(lines))
    result = runner.invoke(app, ["grade", "--input", str(source), "--output", str(out)])
    assert result.exit_code == 0
    assert all(json.loads(line)["correct"] for line in out.read_text().splitlines())
    assert f"graded {len(TASK_NAMES)}, correct {len(TASK_NAMES)}, errors 0" in result.stderr


def test_grade_missing_input_file_fails(tmp_path: Path) -> None:
    missing, out = tmp_path / "missing.jsonl", tmp_path / "out.jsonl"
    result = runner.invoke(app, ["grade", "--input", str(missing), "--output", str(out)])
    assert result.exit_code == 1
    assert "cannot open" in result.stderr


def test_grade_output_into_a_missing_folder_fails(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("")
    result = runner.invoke(
        app, ["grade", "--input", str(source), "--output", str(tmp_path / "no" / "o")]
    )
    assert result.exit_code == 1
