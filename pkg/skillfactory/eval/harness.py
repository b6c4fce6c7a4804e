"""The evaluation harness: models × tasks → per-sample records, per-task metrics and a summary.

For each model (by label: "base", "sft", "grpo", …) and each eval task, `samples_per_problem`
responses to every held-out test problem (`held_out.py`) are sampled with the question alone as the
user turn (`prompts.question_prompt`: what SFT traces and GRPO rollouts start from; every question
states its answer format) and graded. The output folder holds:

- `<label>/<task>.jsonl`: one record per sample: problem id, response, extracted answer,
  correctness, #Ans, #Ref, every verdict with the correctness of the sample it judges, tokens;
- `<label>/<task>.budget_forcing.jsonl`: the same with budget forcing (when enabled), with the
  first response beside the forced one;
- `<label>/aggregate.json`: `{"model": path, "tasks": {task: metrics}, "groups": {group:
  averages}}` for that model; task metrics are accuracy, n_answers, n_reflections (means per
  response), verdict_f1_correct, verdict_f1_incorrect, mean_tokens, truncated_share, the counts
  behind them, and `budget_forcing` when enabled;
- `summary.json`: `{label: <that label's aggregate>}` for every label evaluated into this folder
  (a later call replaces the labels it evaluates and keeps the others).

Groups are `in_domain` (stage 1's task), `harder` (the same family, larger size, e.g. countdown-4
to 6 after countdown-3), `out_of_domain` (the rest) and `overall`; a group without tasks is left
out. Their metrics are plain means over their tasks.

Every random choice follows the run seed: the test problems, and each task's sampling seed (the
same for every model, so models answer the same problems under the same seeds).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from skillfactory.engines.base import ChatMessage, Completion, Engine, SamplingParams
from skillfactory.engines.setup import spec_engine_factory
from skillfactory.eval.budget_forcing import ForcedSample, force_budget
from skillfactory.eval.held_out import held_out_problems
from skillfactory.eval.skill_metrics import (
    ResponseMetrics,
    SkillMetrics,
    aggregate,
    response_metrics,
    task_check,
)
from skillfactory.parsing import extract_answer
from skillfactory.prompts import question_prompt
from skillfactory.run_folder import run_dir
from skillfactory.runspec import EvalSpec, RunSpec
from skillfactory.seeds import derived_seed
from skillfactory.tasks import Problem, get_task

EVAL_DIR = "eval"
SUMMARY_FILE = "summary.json"
AGGREGATE_FILE = "aggregate.json"
BUDGET_FORCING_SUFFIX = ".budget_forcing.jsonl"

AVERAGED = (
    "accuracy",
    "n_answers",
    "n_reflections",
    "reflect_share",
    "verdict_f1_correct",
    "verdict_f1_incorrect",
    "mean_tokens",
)
"""Task metrics that groups average."""
AVERAGED_BUDGET_FORCING = ("accuracy_without", "accuracy_with", "difference", "forced_share")

EngineFactory = Callable[[str], Engine]
"""Builds an engine on a model (a path, hub id or registered short name)."""
TaskCallback = Callable[[str, str, dict[str, Any]], None]
"""Called with (label, task, task metrics) after each task of each model."""

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SIZED = re.compile(r"^(?P<family>.+)-(?P<size>\d+)$")


def eval_dir(spec: RunSpec) -> Path:
    """Where a run writes its evaluation: `<output_dir>/<run name>/eval`."""
    return run_dir(spec) / EVAL_DIR


def evaluate(
    spec: RunSpec,
    models: Mapping[str, str | Path],
    out_dir: Path,
    *,
    tasks: Sequence[str] | None = None,
    num_problems: int | None = None,
    engine_factory: EngineFactory | None = None,
    on_task: TaskCallback | None = None,
) -> dict[str, Any]:
    """Evaluate every model (label → path, hub id or short name) on every task (default
    `spec.eval.tasks`) with `num_problems` test problems each (default `spec.eval.num_problems`).

    Writes the files of the module docstring under `out_dir` and returns the summary (as written
    to `summary.json`). Each model's engine comes from `engine_factory(model)` (default: the
    spec's engine) and is closed after that model, also on error.
    """
    for label in models:
        if not _LABEL.match(label):
            raise ValueError(
                f"model label {label!r} must be letters, digits, . _ - (a folder name)"
            )
    task_names = list(spec.eval.tasks if tasks is None else tasks)
    count = spec.eval.num_problems if num_problems is None else num_problems
    problems = {name: held_out_problems(spec, name, count) for name in task_names}
    factory = engine_factory if engine_factory is not None else spec_engine_factory(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = read_summary(out_dir)
    for label, model in models.items():
        engine = factory(str(model))
        try:
            results: dict[str, dict[str, Any]] = {}
            for name in task_names:
                results[name] = evaluate_task(engine, spec, name, problems[name], out_dir / label)
                if on_task is not None:
                    on_task(label, name, results[name])
        finally:
            engine.close()
        model_summary = {
            "model": str(model),
            "tasks": results,
            "groups": group_metrics(spec, results),
        }
        write_json(out_dir / label / AGGREGATE_FILE, model_summary)
        summary[label] = model_summary
    write_json(out_dir / SUMMARY_FILE, summary)
    return summary


def eval_params(spec: EvalSpec, seed: int, max_tokens: int | None = None) -> SamplingParams:
    """Sampling of eval responses: k per problem, the eval temperature, top-p and length."""
    return SamplingParams(
        n=spec.samples_per_problem,
        temperature=spec.temperature,
        top_p=spec.top_p,
        max_tokens=spec.max_tokens if max_tokens is None else max_tokens,
        seed=seed,
    )


def task_seed(spec: RunSpec, task_name: str, *parts: object) -> int:
    """The sampling seed of a task (the same for every model)."""
    return derived_seed(spec.seed, "eval", task_name, *parts)


def evaluate_task(
    engine: Engine, spec: RunSpec, task_name: str, problems: Sequence[Problem], out: Path
) -> dict[str, Any]:
    """Sample, grade and write one task for one model; returns the task's metrics."""
    prompts = [question_prompt(p.question) for p in problems]
    params = eval_params(spec.eval, task_seed(spec, task_name))
    completions = engine.generate(prompts, params) if prompts else []
    graded = [
        [grade_sample(task_name, problem, c.text, len(c.token_ids)) for c in samples]
        for problem, samples in zip(problems, completions, strict=True)
    ]
    records = [
        sample_record(problem, j, c.text, c.finish_reason, metrics)
        for problem, samples, row in zip(problems, completions, graded, strict=True)
        for j, (c, metrics) in enumerate(zip(samples, row, strict=True))
    ]
    write_jsonl(out / f"{task_name}.jsonl", records)
    metrics = [m for row in graded for m in row]
    result = task_metrics(aggregate(metrics), len(problems), records)
    if spec.eval.budget_forcing.enabled:
        result["budget_forcing"] = evaluate_budget_forcing(
            engine, spec, task_name, problems, prompts, completions, out
        )
    return result


def evaluate_budget_forcing(
    engine: Engine,
    spec: RunSpec,
    task_name: str,
    problems: Sequence[Problem],
    prompts: Sequence[Sequence[ChatMessage]],
    completions: Sequence[Sequence[Completion]],
    out: Path,
) -> dict[str, Any]:
    """Accuracy with at most B1 tokens, and after forcing up to B2; writes the forced records.
    The plain responses are reused as the first ones when `max_tokens` equals B1."""
    forcing = spec.eval.budget_forcing
    params = eval_params(spec.eval, task_seed(spec, task_name), forcing.first_budget)
    first: Sequence[Sequence[Completion]] = completions
    if forcing.first_budget != spec.eval.max_tokens and prompts:
        first_params = replace(params, seed=task_seed(spec, task_name, "budget-forcing"))
        first = engine.generate(prompts, first_params)
    forced = force_budget(engine, prompts, first, params, forcing.total_budget) if prompts else []
    before: list[ResponseMetrics] = []
    after: list[ResponseMetrics] = []
    records: list[dict[str, Any]] = []
    for problem, samples in zip(problems, forced, strict=True):
        for j, sample in enumerate(samples):
            before.append(grade_sample(task_name, problem, sample.first_text, sample.first_tokens))
            after.append(grade_sample(task_name, problem, sample.text, sample.tokens))
            records.append(forced_record(problem, j, sample, before[-1], after[-1]))
    write_jsonl(out / f"{task_name}{BUDGET_FORCING_SUFFIX}", records)
    without, with_forcing = aggregate(before), aggregate(after)
    return {
        "first_budget": forcing.first_budget,
        "total_budget": forcing.total_budget,
        "accuracy_without": without.accuracy,
        "accuracy_with": with_forcing.accuracy,
        "difference": with_forcing.accuracy - without.accuracy,
        "forced_share": _share([r["forced"] for r in records]),
        "mean_tokens_without": _mean_tokens(without),
        "mean_tokens_with": _mean_tokens(with_forcing),
        "n_answers_with": with_forcing.mean_answers,
        "n_reflections_with": with_forcing.mean_reflections,
    }


def grade_sample(task_name: str, problem: Problem, text: str, tokens: int) -> ResponseMetrics:
    """Skill metrics of one response; never raises on model text."""
    check = task_check(get_task(task_name), problem)
    return replace(response_metrics(text, check), tokens=tokens)


def sample_record(
    problem: Problem, sample: int, text: str, finish_reason: str, metrics: ResponseMetrics
) -> dict[str, Any]:
    """The JSONL record of one graded sample."""
    return {
        "problem_id": problem.id,
        "sample": sample,
        "response": text,
        "answer": extract_answer(text),
        "reference_answer": problem.answer,
        "correct": metrics.correct,
        "n_answers": metrics.n_answers,
        "n_reflections": metrics.n_reflections,
        "verdicts": [verdict_record(v.predicted, v.actual) for v in metrics.verdicts],
        "tokens": metrics.tokens,
        "finish_reason": finish_reason,
    }


def verdict_record(predicted: bool | None, actual: bool) -> dict[str, Any]:
    """One verdict: what it said ("correct", "incorrect" or None) and whether its sample was."""
    said = None if predicted is None else ("correct" if predicted else "incorrect")
    return {"predicted": said, "sample_correct": actual}


def forced_record(
    problem: Problem,
    sample: int,
    forced: ForcedSample,
    before: ResponseMetrics,
    after: ResponseMetrics,
) -> dict[str, Any]:
    """The JSONL record of one sample under budget forcing."""
    record = sample_record(problem, sample, forced.text, forced.first_finish, after)
    del record["finish_reason"]
    return {
        **record,
        "forced": forced.forced,
        "first_response": forced.first_text,
        "first_correct": before.correct,
        "first_tokens": forced.first_tokens,
        "first_finish_reason": forced.first_finish,
    }


def task_metrics(
    metrics: SkillMetrics, n_problems: int, records: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The metrics of one task for one model, flat for tables, with the details beside them."""
    return {
        "n_problems": n_problems,
        "n_samples": metrics.n_responses,
        "accuracy": metrics.accuracy,
        "n_answers": metrics.mean_answers,
        "n_reflections": metrics.mean_reflections,
        "reflect_share": metrics.reflect_share,
        "verdict_f1_correct": metrics.verdict["correct"].f1,
        "verdict_f1_incorrect": metrics.verdict["incorrect"].f1,
        "n_verdicts": metrics.n_verdicts,
        "mean_tokens": _mean_tokens(metrics),
        "truncated_share": _share([r["finish_reason"] == "length" for r in records]),
        "verdict": {name: scores.to_dict() for name, scores in metrics.verdict.items()},
        "tokens": metrics.tokens.to_dict() if metrics.tokens is not None else None,
        "chars": metrics.chars.to_dict(),
    }


def task_groups(spec: RunSpec, task_names: Sequence[str]) -> dict[str, list[str]]:
    """Tasks by group: in-domain (stage 1's task), harder (its family, larger size),
    out-of-domain (the rest) and overall; empty groups are left out."""
    trained = spec.data.task
    family, size = _family(trained)
    groups: dict[str, list[str]] = {"in_domain": [], "harder": [], "out_of_domain": []}
    for name in task_names:
        other_family, other_size = _family(name)
        if name == trained:
            groups["in_domain"].append(name)
        elif other_family == family and _larger(other_size, size):
            groups["harder"].append(name)
        else:
            groups["out_of_domain"].append(name)
    groups["overall"] = list(task_names)
    return {name: members for name, members in groups.items() if members}


def group_metrics(spec: RunSpec, results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean metrics of each task group."""
    groups: dict[str, Any] = {}
    for group, members in task_groups(spec, list(results)).items():
        rows = [results[m] for m in members]
        averages: dict[str, Any] = {"tasks": members}
        averages.update({key: statistics.fmean(r[key] for r in rows) for key in AVERAGED})
        forced = [r["budget_forcing"] for r in rows if "budget_forcing" in r]
        if len(forced) == len(rows):
            averages["budget_forcing"] = {
                key: statistics.fmean(f[key] for f in forced) for key in AVERAGED_BUDGET_FORCING
            }
        groups[group] = averages
    return groups


def _family(task_name: str) -> tuple[str, int | None]:
    match = _SIZED.match(task_name)
    if match is None:
        return task_name, None
    return match["family"], int(match["size"])


def _larger(size: int | None, than: int | None) -> bool:
    return size is not None and than is not None and size > than


def _mean_tokens(metrics: SkillMetrics) -> float:
    return metrics.tokens.mean if metrics.tokens is not None else 0.0


def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def read_summary(out_dir: Path) -> dict[str, Any]:
    """The summary already in a folder (labels of earlier calls), or an empty one."""
    path = out_dir / SUMMARY_FILE
    if not path.exists():
        return {}
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def write_json(path: Path, value: Any) -> None:
    """Write JSON through a temporary file, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    partial.replace(path)


def write_jsonl(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Write one JSON record per line, through a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    partial.replace(path)
