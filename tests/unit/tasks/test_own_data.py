"""Dataset tasks of one's own data (`RunSpec.datasets`, `skillfactory.tasks.own_data`)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from skillfactory.runspec import InvalidRunSpec, TaskDatasetSpec, parse_run_spec
from skillfactory.tasks import get_task, grade, task_of, use_datasets
from skillfactory.tasks.base import Problem
from skillfactory.tasks.dataset_rows import DatasetUnavailableError
from skillfactory.tasks.own_data import DatasetRowError, OwnDatasetTask


def write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(n: int) -> list[dict[str, Any]]:
    return [{"q": f"What is {i} + {i}?", "a": str(2 * i), "k": f"r{i}"} for i in range(n)]


def spec(**fields: Any) -> TaskDatasetSpec:
    return TaskDatasetSpec(**{"name": "mine", "question": "q", "answer": "a", **fields})


def test_jsonl_rows_become_problems_with_the_template(tmp_path: Path) -> None:
    path = write(tmp_path / "train.jsonl", rows(5))
    task = OwnDatasetTask(spec(path=str(path), id="k", template="Q: {q} ({k}) {{x}}"))
    problem = task.problems(1, seed=0)[0]
    index = int(problem.id.removeprefix("mine-r"))
    assert problem.task == "mine" and problem.answer == str(2 * index)
    assert problem.question == f"Q: What is {index} + {index}? (r{index}) {{x}}"
    assert problem.data == {"grader": "exact"}


def test_sampling_is_seeded_like_the_built_in_tasks(tmp_path: Path) -> None:
    task = OwnDatasetTask(spec(path=str(write(tmp_path / "t.jsonl", rows(20)))))
    first = [p.id for p in task.problems(5, seed=3)]
    assert first == [p.id for p in task.problems(5, seed=3)]
    assert first != [p.id for p in task.problems(5, seed=4)]
    assert len({p.id for p in task.problems(100, seed=0)}) == 20  # all, shuffled


def test_the_test_split_reads_test_path_else_path(tmp_path: Path) -> None:
    train = write(tmp_path / "train.jsonl", rows(3))
    test = write(tmp_path / "test.jsonl", [{"q": "held out", "a": "1"}])
    with_test = OwnDatasetTask(spec(path=str(train), test_path=str(test)))
    assert [p.question for p in with_test.problems(5, split="test")][0].startswith("held out")
    without = OwnDatasetTask(spec(path=str(train)))
    assert len(without.problems(5, split="test")) == 3


def test_a_missing_column_names_the_row_the_column_and_the_field(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [{"q": "1?", "a": "1"}, {"q": "2?", "answer": "2"}])
    task = OwnDatasetTask(spec(path=str(path)), "datasets.0")
    with pytest.raises(DatasetRowError, match=r"row 2: no 'a' column \(datasets\.0\.answer"):
        task.problems(2)


def test_bad_lines_and_templates_name_where(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "1", "a": "1"}\nnot json\n')
    with pytest.raises(DatasetRowError, match=r"datasets\.path: .* line 2: not JSON"):
        OwnDatasetTask(spec(path=str(bad))).problems(1)
    path = write(tmp_path / "t.jsonl", rows(1))
    with pytest.raises(DatasetRowError, match=r"template uses \{nope\}"):
        OwnDatasetTask(spec(path=str(path), template="{nope}")).problems(1)
    with pytest.raises(DatasetUnavailableError, match="is not a file"):
        OwnDatasetTask(spec(path=str(tmp_path / "absent.jsonl"))).problems(1)


def test_the_template_never_looks_up_attributes(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", rows(1))
    with pytest.raises(DatasetRowError, match="a column the row does not have"):
        OwnDatasetTask(spec(path=str(path), template="{q.__class__}")).problems(1)


@pytest.mark.parametrize(
    ("grader", "gold", "right", "wrong"),
    [
        ("exact", "Paris", " paris. ", "Lyon"),
        ("numeric", "1,234", "The total is $1234.", "1235"),
        ("math", "\\frac{1}{2}", "1/2", "2"),
        ("choice", "B", "(b)", "A"),
    ],
)
def test_each_grader(grader: str, gold: str, right: str, wrong: str) -> None:
    problem = Problem("p", "mine", "?", gold, {"grader": grader})
    task = task_of(problem)  # not registered here: graded from the problem's data
    assert grade(task, problem, f"<answer>{right}</answer>").correct
    assert not grade(task, problem, f"<answer>{wrong}</answer>").correct
    assert not grade(task, problem, "no answer").correct


def test_choices_are_lettered_and_graded_by_letter_or_text(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", [{"q": "Sky?", "a": "B", "opts": ["green", "blue"]}])
    task = OwnDatasetTask(
        spec(path=str(path), grader="choice", choices="opts", template="{q}\n{choices}")
    )
    problem = task.problems(1)[0]
    assert problem.question == "Sky?\nA. green\nB. blue"
    assert task.check(problem, "blue") and task.check(problem, "B")
    assert not task.check(problem, "green")


def test_hub_datasets_read_the_named_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def load_dataset(name: str, config: str | None, split: str) -> list[dict[str, Any]]:
        calls.append((name, config, split))
        return [{"question": "1+1?", "answer": "2"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    task = OwnDatasetTask(TaskDatasetSpec(name="hubby", hub="org/qa", test_split="validation"))
    assert task.problems(1)[0].answer == "2"
    assert task.problems(1, split="test")[0].answer == "2"
    assert calls == [("org/qa", None, "train"), ("org/qa", None, "validation")]


def test_registered_datasets_are_tasks_by_name(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", rows(3))
    entry = {"name": "reg-one", "path": str(path), "question": "q", "answer": "a"}
    run = parse_run_spec({"datasets": [entry]})
    use_datasets(run.datasets)
    assert get_task("reg-one").problems(1)[0].task == "reg-one"
    with pytest.raises(ValueError, match=r"datasets\.0\.name: 'gsm8k' is a built-in"):
        use_datasets([spec(name="gsm8k", path=str(path))])
    with pytest.raises(ValueError, match="another definition"):
        use_datasets([spec(name="reg-one", path=str(path), grader="numeric")])


def test_the_spec_refuses_bad_dataset_entries() -> None:
    with pytest.raises(InvalidRunSpec, match="exactly one of path"):
        parse_run_spec({"datasets": [{"name": "x", "path": "a", "hub": "o/n"}]})
    with pytest.raises(InvalidRunSpec, match="own name"):
        parse_run_spec({"datasets": [{"name": "x", "path": "a"}, {"name": "x", "path": "b"}]})
    with pytest.raises(InvalidRunSpec, match=r"datasets\.0\.grader"):
        parse_run_spec({"datasets": [{"name": "x", "path": "a", "grader": "fuzzy"}]})
