"""The report's tables, computed from run folders: cells are formatted here, once, so the HTML and
the Markdown show the same text.

- `runs_table`: one row per run: name, folder, spec (baseline, model, task, stages), stage times;
- `accuracy_table`: one row per (run, model): accuracy per eval task, then the group means;
- `skill_table`: one row per (run, model, task): #Ans, #Ref, share reflecting with a verdict,
  verdict F1 of both classes, tokens;
- `budget_forcing_table`: accuracy without and with forcing and the difference, where evaluated;
- `stage1_table` / `training_table`: one run's stage-1 summary, and its SFT and GRPO results.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from skillfactory.report.collect import SKIPPED_STAGES, ModelEval, Run

GROUPS = ("in_domain", "harder", "out_of_domain", "overall")
GROUP_NAMES = {
    "in_domain": "in-domain",
    "harder": "harder",
    "out_of_domain": "out-of-domain",
    "overall": "overall",
}
NONE = "–"
"""Cell of a value the run does not have."""


@dataclass
class Table:
    """A titled table of text cells, with the runs it was computed from."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    sources: list[Run] = field(default_factory=list)
    """The runs its numbers come from (shown under the table)."""
    note: str = ""


def fmt(value: Any, digits: int = 3) -> str:
    """A number with `digits` decimals; `NONE` for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return NONE
    return f"{value:.{digits}f}"


def signed(value: Any, digits: int = 3) -> str:
    """A difference with its sign."""
    return fmt(value, digits) if fmt(value) == NONE else f"{value:+.{digits}f}"


def eval_tasks(runs: Sequence[Run]) -> list[str]:
    """Every eval task of the runs, in the order first seen."""
    tasks: dict[str, None] = {}
    for run in runs:
        for model in run.evals:
            tasks.update(dict.fromkeys(model.tasks))
    return list(tasks)


def runs_table(runs: Sequence[Run]) -> Table:
    """Which runs the report covers and the spec of each."""
    rows = []
    for run in runs:
        times = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in run.seconds.items())
        rows.append(
            [
                run.name,
                str(run.path),
                run.baseline,
                run.model,
                run.task,
                planned_stages(run),
                ", ".join(model.method for model in run.evals) or NONE,
                times or NONE,
            ]
        )
    columns = ["run", "folder", "baseline", "model", "task", "stages", "evaluated", "stage times"]
    return Table("Runs and their specs", columns, rows)


def planned_stages(run: Run) -> str:
    """The spec's stages that the run's baseline runs, naming the ones it skips."""
    stages = run.spec.get("stages")
    if not isinstance(stages, list):
        return NONE
    skipped = [s for s in stages if s in SKIPPED_STAGES.get(run.baseline, ())]
    kept = ", ".join(str(s) for s in stages if s not in skipped)
    return f"{kept} ({run.baseline} skips {', '.join(skipped)})" if skipped else kept


def accuracy_table(runs: Sequence[Run]) -> Table:
    """Accuracy of every evaluated model on every task, then the task-group means."""
    tasks = eval_tasks(runs)
    groups = [g for g in GROUPS if any(g in m.groups for r in runs for m in r.evals)]
    rows = [
        [run.name, model.method]
        + [fmt(model.tasks.get(task, {}).get("accuracy")) for task in tasks]
        + [fmt(model.groups.get(group, {}).get("accuracy")) for group in groups]
        for run in runs
        for model in run.evals
    ]
    columns = ["run", "method", *tasks, *(GROUP_NAMES[g] for g in groups)]
    note = _group_note(runs)
    return Table("Accuracy across methods", columns, rows, _evaluated(runs), note)


def skill_table(runs: Sequence[Run]) -> Table:
    """Skill usage per task and model: #Ans, #Ref, verdict F1 correct / incorrect, tokens."""
    rows = [
        [
            run.name,
            model.method,
            task,
            fmt(metrics.get("n_answers"), 2),
            fmt(metrics.get("n_reflections"), 2),
            fmt(metrics.get("reflect_share")),
            fmt(metrics.get("verdict_f1_correct")),
            fmt(metrics.get("verdict_f1_incorrect")),
            fmt(metrics.get("mean_tokens"), 1),
        ]
        for run in runs
        for model in run.evals
        for task, metrics in model.tasks.items()
    ]
    columns = [
        "run", "method", "task", "#Ans", "#Ref", "reflects", "F1 correct", "F1 incorrect", "tokens",
    ]  # fmt: skip
    note = (
        "#Ans, #Ref: mean <answer> attempts and <reflect> blocks per response; reflects: share "
        "of responses with a <reflect> block holding a <verdict>; tokens: mean."
    )
    return Table("Skill usage", columns, rows, _evaluated(runs), note)


def budget_forcing_table(runs: Sequence[Run]) -> Table | None:
    """Accuracy without and with budget forcing, per task and the overall mean; None when no run
    evaluated with budget forcing."""
    rows: list[list[str]] = []
    for run in runs:
        for model in run.evals:
            forced = _forced(model)
            for task, metrics in forced:
                forcing = {**forced[0][1]["budget_forcing"], **metrics["budget_forcing"]}
                rows.append(
                    [
                        run.name,
                        model.method,
                        task,
                        _budgets(forcing),
                        fmt(forcing.get("accuracy_without")),
                        fmt(forcing.get("accuracy_with")),
                        signed(forcing.get("difference")),
                        fmt(forcing.get("forced_share")),
                    ]
                )
    if not rows:
        return None
    columns = ["run", "method", "task", "B1 / B2", "without", "with", "difference", "forced"]
    note = "forced: share of responses that stopped within B1 and were made to sample again."
    sources = [r for r in runs if any(_forced(m) for m in r.evals)]
    return Table("Budget forcing", columns, rows, sources, note)


def stage1_table(run: Run) -> Table | None:
    """Stage 1 of one run: samples, accuracy per prompt variant, verdicts, filter yield, traces."""
    summary = run.stage1
    if summary is None:
        return None
    composition = _dict(summary.get("composition"))
    rows = [
        ["problems", _count(summary.get("problems"))],
        ["samples", _count(summary.get("samples"))],
        ["sample accuracy", fmt(summary.get("accuracy"))],
    ]
    for variant, accuracy in _dict(summary.get("accuracy_per_prompt_variant")).items():
        rows.append([f"accuracy · {variant}", fmt(accuracy)])
    rows += [
        ["reflections", _count(summary.get("reflections"))],
        ["verdict accuracy", fmt(summary.get("verdict_accuracy"))],
        ["verdict accuracy when given", fmt(summary.get("verdict_accuracy_when_given"))],
        ["verdicts missing", _count(summary.get("verdicts_missing"))],
    ]
    for verdict_class, counts in _dict(composition.get("verdict_filter")).items():
        rows.append([f"verdict-filter yield · {verdict_class}", filter_yield(_dict(counts))])
    rows += [
        ["composition", str(composition.get("variant", NONE))],
        ["problems without a correct sample", _count(composition.get("problems_without_correct"))],
        ["problems without a trace", _count(composition.get("problems_without_trace"))],
        ["traces", _count(summary.get("traces"))],
    ]
    lengths = _dict(composition.get("trace_lengths"))
    if lengths:
        rows.append(
            ["traces by samples", ", ".join(f"{n}: {count}" for n, count in lengths.items())]
        )
    return Table(f"Stage 1 · {run.name}", ["", "value"], rows, [run])


def filter_yield(counts: dict[str, Any]) -> str:
    """`kept / judged (share)` of one verdict class."""
    kept, dropped = counts.get("kept"), counts.get("dropped")
    if not isinstance(kept, int) or not isinstance(dropped, int):
        return NONE
    total = kept + dropped
    return f"{kept} / {total} ({fmt(kept / total if total else 0.0)})"


def training_table(run: Run) -> Table | None:
    """SFT and GRPO results of one run (None when it has neither)."""
    rows: list[list[str]] = []
    if run.sft is not None:
        rows += [
            ["SFT examples", _count(run.sft.get("examples"))],
            ["SFT steps", _count(run.sft.get("steps"))],
            ["SFT train loss", fmt(run.sft.get("train_loss"), 4)],
        ]
    if run.grpo_steps:
        first, last = run.grpo_steps[0], run.grpo_steps[-1]
        rows += [
            ["GRPO steps logged", str(len(run.grpo_steps))],
            ["GRPO reward mean · first step", fmt(first.get("reward_mean"))],
            ["GRPO reward mean · last step", fmt(last.get("reward_mean"))],
        ]
    if run.grpo_summary is not None:
        for key in ("groups_trained", "samples_trained", "dropped_stale", "dropped_zero_variance"):
            if key in run.grpo_summary:
                rows.append([f"GRPO {key.replace('_', ' ')}", _count(run.grpo_summary[key])])
    if not rows:
        return None
    return Table(f"Training · {run.name}", ["", "value"], rows, [run])


def _forced(model: ModelEval) -> list[tuple[str, dict[str, Any]]]:
    tasks = [(t, m) for t, m in model.tasks.items() if isinstance(m.get("budget_forcing"), dict)]
    overall = model.groups.get("overall", {})
    if tasks and isinstance(overall.get("budget_forcing"), dict):
        tasks.append(("overall (mean)", overall))
    return tasks


def _budgets(forcing: dict[str, Any]) -> str:
    first, total = forcing.get("first_budget"), forcing.get("total_budget")
    return f"{first} / {total}" if first is not None and total is not None else NONE


def _group_note(runs: Iterable[Run]) -> str:
    parts = []
    for run in runs:
        groups = next((m.groups for m in run.evals if m.groups), {})
        members = [
            f"{GROUP_NAMES.get(g, g)} = {', '.join(map(str, v.get('tasks', [])))}"
            for g, v in groups.items()
            if g != "overall"
        ]
        if members:
            parts.append(f"{run.name}: {'; '.join(members)}")
    return "Groups are means over their tasks (" + " | ".join(parts) + ")." if parts else ""


def _evaluated(runs: Sequence[Run]) -> list[Run]:
    return [run for run in runs if run.evals]


def _count(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else NONE


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
