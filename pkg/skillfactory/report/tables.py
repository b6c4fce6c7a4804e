"""The report's tables, computed from run folders: cells are formatted here, once, so the HTML and
the Markdown show the same text.

- `runs_table`: one row per run: name, folder, spec (baseline, model, task, stages), stage times;
- `accuracy_table`: one row per (run, model): accuracy per eval task, then the group means;
- `skill_table`: one row per (run, model, task): #Ans, #Ref, share reflecting with a verdict,
  verdict F1 of both classes, tokens;
- `ablation_tables`: one table per base spec that several variants (the method, its ablations,
  baselines, released formats) were run from, in the paper's layout: the base model, then each
  variant after SFT and after SFT→GRPO in the paper's order; accuracy per task grouped in-domain,
  harder, out-of-domain, the means, and in-domain skill usage;
- `budget_forcing_table`: accuracy without and with forcing and the difference, where evaluated;
- `stage1_table` / `training_table`: one run's stage-1 summary, and its SFT and GRPO results.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from skillfactory.ablation import base_key, paper_rank, variant_of
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
                run.where,
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


def ablation_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """Evaluated runs that are variants of one base spec (`skillfactory.ablation.base_key`), two
    or more distinct variants per group, each group in the paper's order
    (`skillfactory.ablation.PAPER_ORDER`, then as given)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.spec and run.evals:
            groups.setdefault(base_key(run.spec), []).append(run)
    return [
        sorted(group, key=lambda run: paper_rank(variant_of(run.spec)))
        for group in groups.values()
        if len({variant_of(run.spec) for run in group}) > 1
    ]


def ablation_tables(runs: Sequence[Run]) -> list[Table]:
    """The paper's table for each group of `ablation_groups`: one row for the base model (as the
    method's run evaluated it, else the first run's), then
    one per variant and model (SFT, SFT→GRPO; GRPO for rl-only); columns: accuracy per task
    (in-domain, harder, out-of-domain), the mean of each group of several tasks and of all, then
    the in-domain skill usage (share reflecting with a verdict, verdict F1 of both classes)."""
    return [_ablation_table(group) for group in ablation_groups(runs)]


def _ablation_table(group: Sequence[Run]) -> Table:
    members = _group_members(group)
    tasks = [t for g in ("in_domain", "harder", "out_of_domain") for t in members.get(g, [])]
    tasks += [t for t in eval_tasks(group) if t not in tasks]
    means = [g for g in GROUPS if len(members.get(g, [])) > 1 or (g == "overall" and g in members)]
    skill_group = "in_domain" if "in_domain" in members else "overall"
    labels = _variant_labels(group)

    def row(variant: str, stage: str, model: ModelEval) -> list[str]:
        skills = model.groups.get(skill_group, {})
        return (
            [variant, stage]
            + [fmt(model.tasks.get(task, {}).get("accuracy")) for task in tasks]
            + [fmt(model.groups.get(g, {}).get("accuracy")) for g in means]
            + [fmt(skills.get(key)) for key in _SKILL_KEYS]
        )

    rows: list[list[str]] = []
    method_first = sorted(group, key=lambda run: variant_of(run.spec) != "skillfactory")
    base = next(((r, m) for r in method_first for m in r.evals if m.label == "base"), None)
    if base is not None:
        rows.append(row("base model", "base", base[1]))
    for run, variant in zip(group, labels, strict=True):
        for model in run.evals:
            if model.label != "base":
                rows.append(row(variant, _stage_name(run, model.label), model))
    columns = ["variant", "model", *tasks, *(f"{GROUP_NAMES[g]} mean" for g in means)]
    columns += ["reflects", "F1 correct", "F1 incorrect"]
    parts = [
        f"{GROUP_NAMES[g]}: {', '.join(members[g])}"
        for g in ("in_domain", "harder", "out_of_domain")
        if members.get(g)
    ]
    note = (
        f"Accuracy per task ({'; '.join(parts) or 'no task groups'}); means over the tasks of "
        f"each group; reflects and verdict F1: {GROUP_NAMES[skill_group]} means."
    )
    if base is not None:
        note += f" The base model row is run {base[0].name}'s evaluation of it."
    first = group[0]
    title = f"Ablations · {first.model} · {first.task}"
    return Table(title, columns, rows, list(group), note)


_SKILL_KEYS = ("reflect_share", "verdict_f1_correct", "verdict_f1_incorrect")


def _group_members(runs: Sequence[Run]) -> dict[str, list[str]]:
    """Tasks of each eval group, as the first run that groups them says."""
    for run in runs:
        for model in run.evals:
            if model.groups:
                return {
                    group: [str(t) for t in value.get("tasks", [])]
                    for group, value in model.groups.items()
                }
    return {}


def _variant_labels(group: Sequence[Run]) -> list[str]:
    """Each run's variant; runs that share one (e.g. two distill datasets) go by their names."""
    variants = [variant_of(run.spec) for run in group]
    return [
        run.name if variants.count(variant) > 1 else variant
        for run, variant in zip(group, variants, strict=True)
    ]


def _stage_name(run: Run, label: str) -> str:
    if label == "sft":
        return "SFT"
    if label == "grpo":
        return "GRPO" if run.baseline == "rl-only" else "SFT→GRPO"
    return label


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
        terms = last.get("reward_terms")
        if isinstance(terms, dict) and set(terms) != {"correctness"}:  # grpo.rewards
            failures = last.get("reward_failures") or {}
            for name, value in terms.items():
                failed = sum(int(s.get("reward_failures", {}).get(name, 0)) for s in run.grpo_steps)
                note = f" ({failed} failed)" if failed or name in failures else ""
                rows.append([f"GRPO reward term {name} · last step", fmt(value) + note])
    if run.grpo_summary is not None:
        for key in ("groups_trained", "samples_trained", "dropped_stale", "dropped_zero_variance"):
            if key in run.grpo_summary:
                rows.append([f"GRPO {key.replace('_', ' ')}", _count(run.grpo_summary[key])])
        if "best_step" in run.grpo_summary:  # grpo.eval_every: evaluations during training
            rows.append(["GRPO best step (held-out eval)", _count(run.grpo_summary["best_step"])])
            rows.append(
                ["GRPO best eval accuracy", fmt(run.grpo_summary.get("best_eval_accuracy"))]
            )
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
