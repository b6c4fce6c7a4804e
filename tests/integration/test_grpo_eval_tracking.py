"""Eval every N steps during GRPO and experiment tracking (issue 17 items 3 and 8), on the tiny
model with the first-token reward: wandb in offline mode and trackio on a local database, and
what they logged read back (wandb: the run's `.wandb` record log and its table files; trackio:
its SQLite database)."""

from __future__ import annotations

import json
import sqlite3
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from skillfactory.runspec import RunSpec
from skillfactory.stages.grpo import best_eval

STEPS = 3


def tracked_spec(output_dir: Path, backend: str) -> RunSpec:
    from first_token_grpo import first_token_spec  # the script's folder is on sys.path

    spec = first_token_spec(output_dir, 1, STEPS, 2)
    grpo = spec.grpo.model_copy(update={"eval_every": 2, "eval_problems": 2})
    evaluation = spec.eval.model_copy(update={"samples_per_problem": 2})
    tracking = spec.tracking.model_copy(
        update={
            "backend": backend,
            "project": "sf-test",
            "run_name": f"run-{backend}",
            "completions_every": 2,
            "max_completions": 5,
        }
    )
    return spec.model_copy(update={"grpo": grpo, "eval": evaluation, "tracking": tracking})


def run_tracked(model: Path, spec: RunSpec) -> dict[str, Any]:
    from first_token_grpo import first_token_reward

    from skillfactory.engines.transformers_engine import TransformersEngine
    from skillfactory.rollout.scoring import per_completion
    from skillfactory.stages.grpo import GRPOStage
    from skillfactory.tracking import open_tracker

    tracker = open_tracker(spec)
    try:
        stage = GRPOStage(
            spec,
            model,
            lambda path: TransformersEngine(path, device="cpu", max_batch_size=64, seed=0),
            score=per_completion(first_token_reward),
            tracker=tracker,
        )
        return stage.run()
    finally:
        tracker.finish()


def check_stage_outputs(spec: RunSpec, summary: dict[str, Any]) -> None:
    grpo = Path(spec.output_dir) / spec.name / "grpo"
    evals = [json.loads(line) for line in (grpo / "eval.jsonl").read_text().splitlines()]
    assert [e["version"] for e in evals] == [2, 3]  # every 2 steps and at the last
    for e in evals:
        metrics = e["tasks"]["countdown-3"]
        assert metrics["n_problems"] == 2 and metrics["n_samples"] == 4
        assert e["accuracy"] == metrics["accuracy"]
        assert (grpo / "evals" / f"step-{e['version']:06d}" / "countdown-3.jsonl").exists()
    best = best_eval(evals)
    assert best is not None
    assert summary["best_step"] == best["version"]
    assert summary["best_eval_accuracy"] == best["accuracy"]
    assert (grpo / "best" / "config.json").exists()


# wandb --------------------------------------------------------------------------------------


def wandb_records(path: Path) -> list[Any]:
    """The records of a wandb run file (`run-<id>.wandb`): a LevelDB-style log after a 7-byte
    `:W&B` header, 32 KiB blocks of chunks (crc32, length, type: full/first/middle/last), each
    record a `wandb_internal_pb2.Record` (the SDK no longer ships a Python reader)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, payloads, partial = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            payloads.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            payloads.append(partial + chunk)
            partial = b""
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def test_wandb_offline_logs_steps_eval_and_completions(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb", reason="needs the tracking extra")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb-dir").mkdir()
    spec = tracked_spec(tmp_path / "runs", "wandb")
    summary = run_tracked(tiny_model_dir, spec)
    check_stage_outputs(spec, summary)

    (run_dir,) = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*")
    (run_file,) = run_dir.glob("run-*.wandb")
    records = wandb_records(run_file)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.display_name) == ("sf-test", "run-wandb")
    history: dict[int, dict[str, Any]] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            history.setdefault(int(items["_step"]), {}).update(items)
    steps = [
        json.loads(line)
        for line in (Path(spec.output_dir) / spec.name / "grpo" / "steps.jsonl")
        .read_text()
        .splitlines()
    ]
    for step in steps:
        logged = history[step["version"]]
        assert logged["train/loss"] == pytest.approx(step["loss"])
        assert logged["train/reward_mean"] == pytest.approx(step["reward_mean"])
    evals = [
        json.loads(line)
        for line in (Path(spec.output_dir) / spec.name / "grpo" / "eval.jsonl")
        .read_text()
        .splitlines()
    ]
    for e in evals:
        assert history[e["version"]]["eval/countdown-3/accuracy"] == pytest.approx(e["accuracy"])
    assert history[2]["completions/_type"] == "table-file"
    (table_file,) = (run_dir / "files" / "media" / "table").glob("completions_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == [
        "step",
        "prompt",
        "completion",
        "reward",
        "policy_version",
        "staleness",
    ]
    assert len(table["data"]) == 5
    for step, prompt, _, reward, version, staleness in table["data"]:
        assert step == 2 and prompt and reward in (0.0, 1.0)
        assert staleness == 1 - version and 0 <= staleness <= 1


# trackio ------------------------------------------------------------------------------------


def test_trackio_logs_steps_eval_and_completions_to_its_local_database(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "trackio"
    monkeypatch.setenv("TRACKIO_DIR", str(local))  # read when trackio is first imported
    pytest.importorskip("trackio", reason="needs the tracking extra")
    for module in list(sys.modules.values()):  # an earlier import fixed the folder already
        if (
            module is not None
            and module.__name__.startswith("trackio")
            and hasattr(module, "TRACKIO_DIR")
        ):
            monkeypatch.setattr(module, "TRACKIO_DIR", local)
    spec = tracked_spec(tmp_path / "runs", "trackio")
    summary = run_tracked(tiny_model_dir, spec)
    check_stage_outputs(spec, summary)

    with sqlite3.connect(local / "sf-test.db") as db:
        rows = db.execute("select run_name, step, metrics from metrics order by id").fetchall()
    logged: dict[int, dict[str, Any]] = {}
    for run_name, step, metrics in rows:
        assert run_name == "run-trackio"
        logged.setdefault(int(step), {}).update(json.loads(metrics))
    grpo = Path(spec.output_dir) / spec.name / "grpo"
    for line in (grpo / "steps.jsonl").read_text().splitlines():
        step = json.loads(line)
        assert logged[step["version"]]["train/loss"] == pytest.approx(step["loss"])
        assert logged[step["version"]]["train/groups"] == step["groups"]
    for line in (grpo / "eval.jsonl").read_text().splitlines():
        e = json.loads(line)
        assert logged[e["version"]]["eval/countdown-3/accuracy"] == pytest.approx(e["accuracy"])
    table = logged[2]["completions"]
    assert table["_type"] == "trackio.table"
    assert len(table["_value"]) == 5
    for row in table["_value"]:
        assert row["step"] == 2 and row["prompt"]
        assert row["staleness"] == 1 - row["policy_version"]


def test_best_eval_is_the_highest_accuracy_and_the_earliest_of_equals() -> None:
    results = [
        {"version": 2, "accuracy": 0.25},
        {"version": 4, "accuracy": 0.5},
        {"version": 6, "accuracy": 0.5},
        {"version": 8, "accuracy": 0.125},
    ]
    assert best_eval(results) == {"version": 4, "accuracy": 0.5}
    assert best_eval([]) is None
