"""`skillfactory tasks list` and `skillfactory tasks generate`, run through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from skillfactory.cli import app
from skillfactory.tasks import TASK_NAMES, Problem, get_task

runner = CliRunner()


def test_list_prints_every_task() -> None:
    result = runner.invoke(app, ["tasks", "list"])
    assert result.exit_code == 0
    assert tuple(result.stdout.split()) == TASK_NAMES


def test_generate_writes_jsonl_to_stdout_deterministically() -> None:
    args = ["tasks", "generate", "--task", "countdown-4", "--n", "5", "--seed", "3"]
    first = runner.invoke(app, args)
    again = runner.invoke(app, args)
    other = runner.invoke(app, [*args[:-1], "4"])
    assert first.exit_code == 0
    assert first.stdout == again.stdout != other.stdout
    records = [json.loads(line) for line in first.stdout.splitlines()]
    assert len(records) == 5
    task = get_task("countdown-4")
    for record in records:
        assert {"id", "task", "question", "answer", "numbers", "target"} <= record.keys()
        assert task.check(Problem.from_record(record), record["answer"])


def test_generate_to_a_file_with_a_split(tmp_path: Path) -> None:
    out = tmp_path / "gsm.jsonl"
    args = ["tasks", "generate", "--task", "gsm8k", "--n", "3", "--split", "test", "--output"]
    result = runner.invoke(app, [*args, str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task"] for r in records] == ["gsm8k"] * 3
    assert all(r["id"].startswith("gsm8k-test-") for r in records)


def test_generate_dataset_task_uses_its_own_default_split() -> None:
    result = runner.invoke(app, ["tasks", "generate", "--task", "math500", "--n", "2"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2


def test_generate_unknown_task_fails_with_the_known_names() -> None:
    result = runner.invoke(app, ["tasks", "generate", "--task", "chess", "--n", "1"])
    assert result.exit_code == 2
    assert "unknown task 'chess'" in result.stderr and "countdown-4" in result.stderr


def test_generate_missing_split_fails_cleanly() -> None:
    result = runner.invoke(app, ["tasks", "generate", "--task", "csqa", "--split", "train"])
    assert result.exit_code == 2
    assert "no packaged 'train' split" in result.stderr
