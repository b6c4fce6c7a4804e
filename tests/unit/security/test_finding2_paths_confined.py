"""Issue 15, finding 2: paths are not confined. Every path a submitted run spec names must lie
inside the learner's roots (checked at submit time, naming the field, saying nothing about what
exists), dataset reads take only regular files within a size cap, and run folders are keyed by
run id, so two runs of one name never share outputs; reusing an earlier run's finished stages is
the explicit `reuse_from` field."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from skillfactory.runspec import InvalidRunSpec, parse_run_spec
from skillfactory.serving.run_controller import RunController
from skillfactory.serving.run_policy import RunPolicy, admit
from skillfactory.stages.pipeline import Pipeline
from skillfactory.train.sft import UnreadableDataset, read_chat_dataset


def spec(**fields: object) -> object:
    return parse_run_spec({"name": "probe", "model": "smollm2-135m-instruct", **fields})


@pytest.fixture
def policy(tmp_path: Path) -> RunPolicy:
    (tmp_path / "data").mkdir()
    (tmp_path / "models").mkdir()
    return RunPolicy(tmp_path / "data", model_roots=(tmp_path / "models",))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"output_dir": "../../escape"}, "output_dir"),
        ({"output_dir": "/etc"}, "output_dir"),
        ({"model": "/etc/passwd-folder"}, "model"),
        ({"model": "../models/../../outside"}, "model"),
        ({"sft": {"dataset": "/dev/zero"}}, "sft.dataset"),
        ({"reuse_from": "/tmp/someone-elses-run"}, "reuse_from"),
    ],
)
def test_a_path_outside_the_roots_is_refused_at_submit_naming_the_field(
    policy: RunPolicy, fields: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidRunSpec) as refused:
        admit(spec(**fields), policy, "r1")  # type: ignore[arg-type]
    assert [p.path for p in refused.value.problems] == [field]


def test_the_answer_is_the_same_whether_the_path_exists(policy: RunPolicy, tmp_path: Path) -> None:
    (tmp_path / "secret-model").mkdir()
    answers = []
    for path in (tmp_path / "secret-model", tmp_path / "no-such-model"):
        with pytest.raises(InvalidRunSpec) as refused:
            admit(spec(model=str(path)), policy, "r1")  # type: ignore[arg-type]
        answers.append(refused.value.problems[0].message)
    assert answers[0] == answers[1]


def test_a_symlink_out_of_the_data_root_is_refused(policy: RunPolicy, tmp_path: Path) -> None:
    (policy.data_root / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(InvalidRunSpec):
        admit(spec(output_dir="link/runs"), policy, "r1")  # type: ignore[arg-type]


def test_paths_inside_the_roots_are_admitted_and_the_run_folder_is_keyed_by_run_id(
    policy: RunPolicy, tmp_path: Path
) -> None:
    model = tmp_path / "models" / "base"
    admitted = admit(
        spec(output_dir="runs", model=str(model), sft={"dataset": "chats.jsonl"}),  # type: ignore[arg-type]
        policy,
        "r1",
    )
    assert admitted.output_dir == str(policy.data_root / "runs" / "r1")
    assert admitted.sft.dataset == str(policy.data_root / "chats.jsonl")
    assert admitted.queue.type == "inprocess"
    controller = RunController(tmp_path / "state", policy=policy)
    first = controller.submit(spec(output_dir="runs"))  # type: ignore[arg-type]
    second = controller.submit(spec(output_dir="runs"))  # type: ignore[arg-type]
    folders = {controller.get(r.run_id).spec["output_dir"] for r in (first, second)}
    assert len(folders) == 2  # same name, never the same outputs


def test_dataset_reads_refuse_devices_pipes_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(UnreadableDataset, match="not a regular file"):
        read_chat_dataset("/dev/zero")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(UnreadableDataset, match="not a regular file"):
        read_chat_dataset(fifo)  # would block for ever if opened
    assert time.monotonic() - started < 2
    big = tmp_path / "big.jsonl"
    big.write_text("{}\n" * 100)
    with pytest.raises(UnreadableDataset, match="more than"):
        read_chat_dataset(big, max_bytes=10)
    threading.enumerate()  # nothing left behind


def test_reusing_a_finished_stage_is_explicit(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    earlier = parse_run_spec({"name": "first", "model": str(model), "output_dir": str(tmp_path)})
    data = tmp_path / "first" / "data"
    data.mkdir(parents=True)
    (data / "summary.json").write_text("{}")
    (data / "sft.jsonl").write_text("")
    (data / "escape").symlink_to("/etc")
    later = earlier.model_copy(update={"name": "second"})
    pipeline = Pipeline(later, engine_factory=lambda model: None)  # type: ignore[arg-type,return-value]
    assert pipeline.adopt_finished_stages(tmp_path / "first") == ["data"]
    assert (tmp_path / "second" / "data" / "sft.jsonl").exists()
    assert not (tmp_path / "second" / "data" / "escape").exists()  # links are not followed
    fresh = earlier.model_copy(update={"name": "third"})
    assert fresh.reuse_from is None and not (tmp_path / "third").exists()
