"""Hand-built run folders, shaped like what `skillfactory run` writes, with distinct numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TASKS = ("countdown-3", "countdown-4", "csqa")


def task_metrics(seed: float, forcing: bool = False) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "n_problems": 4,
        "n_samples": 8,
        "accuracy": 0.125 + seed,
        "n_answers": 1.5 + seed,
        "n_reflections": 0.75 + seed,
        "reflect_share": 0.5 + seed / 10,
        "verdict_f1_correct": 0.4 + seed,
        "verdict_f1_incorrect": 0.3 + seed,
        "mean_tokens": 40.0 + 100 * seed,
    }
    if forcing:
        metrics["budget_forcing"] = {
            "first_budget": 32,
            "total_budget": 64,
            "accuracy_without": 0.25 + seed,
            "accuracy_with": 0.375 + seed,
            "difference": 0.125,
            "forced_share": 0.5,
        }
    return metrics


def model_summary(model: str, offset: float, forcing: bool = False) -> dict[str, Any]:
    tasks = {task: task_metrics(offset + i / 100, forcing) for i, task in enumerate(TASKS)}
    skills = ("reflect_share", "verdict_f1_correct", "verdict_f1_incorrect")
    groups: dict[str, Any] = {
        group: {"tasks": [task], **{key: tasks[task][key] for key in ("accuracy", *skills)}}
        for group, task in (
            ("in_domain", "countdown-3"),
            ("harder", "countdown-4"),
            ("out_of_domain", "csqa"),
        )
    }
    groups["overall"] = {"tasks": list(TASKS), "accuracy": 0.111 + offset}
    if forcing:
        groups["overall"]["budget_forcing"] = {
            "accuracy_without": 0.2 + offset,
            "accuracy_with": 0.3 + offset,
            "difference": 0.1,
            "forced_share": 0.5,
        }
    return {"model": model, "tasks": tasks, "groups": groups}


STAGE1 = {
    "task": "countdown-3",
    "model": "tiny",
    "problems": 6,
    "samples": 48,
    "accuracy": 0.1875,
    "accuracy_per_prompt_variant": {"alternatives": 0.25, "step_by_step": 0.125},
    "reflections": 48,
    "verdict_accuracy": 0.4375,
    "verdict_accuracy_when_given": 0.5,
    "verdicts_missing": 3,
    "composition": {
        "variant": "skillfactory",
        "problems_without_correct": 2,
        "problems_without_trace": 3,
        "verdict_filter": {
            "correct": {"kept": 7, "dropped": 2},
            "incorrect": {"kept": 11, "dropped": 28},
        },
        "traces_out": 4,
        "trace_lengths": {"1": 2, "3": 2},
    },
    "traces": 4,
}


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def build_run(
    root: Path,
    name: str = "demo",
    baseline: str = "skillfactory",
    *,
    forcing: bool = False,
    stages: tuple[str, ...] = ("data", "sft", "grpo", "eval"),
    composition: str = "skillfactory",
    offset: float = 0.0,
) -> Path:
    """A run folder with the files of `stages` (the baseline's skipped ones left out); model `i`
    of the run (base, sft, grpo) has the metrics of `model_summary(…, offset + i / 10)`."""
    run = root / name
    labels = ["base", "grpo"] if baseline == "rl-only" else ["base", "sft", "grpo"]
    spec = {
        "name": name,
        "model": "/models/tiny",
        "baseline": baseline,
        "stages": ["data", "sft", "grpo", "eval"],
        "data": {"task": "countdown-3", "composition": composition},
    }
    write_json(
        run / "run.json",
        {"spec": spec, "models": {}, "seconds": {s: 1.5 for s in stages}, "results": {}},
    )
    if "data" in stages and baseline != "rl-only":
        write_json(run / "data" / "summary.json", STAGE1)
    if "sft" in stages and baseline != "rl-only":
        write_json(run / "sft" / "sft.json", {"examples": 4, "steps": 8, "train_loss": 1.23456})
    if "grpo" in stages:
        steps = [
            {"version": v, "reward_mean": v / 10, "loss": 0.5 - v / 20, "staleness": {"0": 8}}
            for v in (1, 2, 3)
        ]
        (run / "grpo").mkdir(parents=True, exist_ok=True)
        (run / "grpo" / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
        write_json(run / "grpo" / "summary.json", {"steps": 3, "groups_trained": 6})
    if "eval" in stages:
        summary = {
            label: model_summary(f"/models/{label}", offset + i / 10, forcing)
            for i, label in enumerate(labels)
        }
        write_json(run / "eval" / "summary.json", summary)
        for i, label in enumerate(labels):
            for task in TASKS:
                records = [{"tokens": 10 * (i + 1) + k, "correct": k % 2 == 0} for k in range(8)]
                path = run / "eval" / label / f"{task}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return run
