"""Read run folders (what `skillfactory run` writes) into typed objects for the report.

A run folder `<output_dir>/<name>/` may hold `run.json`, `data/summary.json`, `sft/sft.json`,
`grpo/steps.jsonl`, `grpo/summary.json`, `eval/summary.json` (or only `eval/<label>/aggregate.json`)
and `eval/<label>/<task>.jsonl`. Any of them may be missing (a run of some stages, a baseline that
skips stages, a run still going) or unreadable: reading never raises on them, it records what is
missing in `Run.missing` and what could not be read in `Run.problems`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
STAGE1_SUMMARY = Path("data") / "summary.json"
SFT_RESULT = Path("sft") / "sft.json"
GRPO_STEPS = Path("grpo") / "steps.jsonl"
GRPO_SUMMARY = Path("grpo") / "summary.json"
EVAL_DIR = Path("eval")
EVAL_SUMMARY = EVAL_DIR / "summary.json"
EVAL_AGGREGATE = "aggregate.json"

LABEL_ORDER = ("base", "sft", "grpo")
"""Models the pipeline evaluates, in the order of their stages; other labels follow."""
SKIPPED_STAGES = {"rl-only": ("data", "sft"), "distill": ("data",)}
"""Stages a baseline leaves out (as `skillfactory.stages.pipeline.stages_to_run` does)."""
STAGE_FILES = {
    "data": (STAGE1_SUMMARY,),
    "sft": (SFT_RESULT,),
    "grpo": (GRPO_STEPS, GRPO_SUMMARY),
    "eval": (EVAL_SUMMARY,),
}
"""What each stage leaves in the run folder."""


def method_name(baseline: str, label: str, composition: str = "skillfactory") -> str:
    """The row name of model `label` of a run with this baseline: `base`, `SFT`, `SFT→GRPO`,
    `rl-only GRPO`, `STaR-SFT→GRPO`, `distill-SFT→GRPO`; a stage-1 ablation (a composition other
    than the method's own) is named after it, e.g. `SFT→GRPO [no-reflection]`."""
    if label == "base":
        return "base"
    sft = {"star": "STaR-SFT", "distill": "distill-SFT"}.get(baseline, "SFT")
    if baseline == "skillfactory" and composition not in ("skillfactory", "star"):
        suffix = f" [{composition}]"
    elif baseline == "skillfactory" and composition == "star":
        sft, suffix = "STaR-SFT", ""
    else:
        suffix = ""
    if label == "sft":
        return sft + suffix
    if label == "grpo":
        return "rl-only GRPO" if baseline == "rl-only" else f"{sft}→GRPO{suffix}"
    return label


@dataclass
class ModelEval:
    """The evaluation of one model of a run."""

    label: str
    """The label the run evaluated it under (`base`, `sft`, `grpo`, …)."""
    method: str
    """Its row name (see `method_name`)."""
    model: str
    """The model folder or hub id evaluated."""
    tasks: dict[str, dict[str, Any]]
    """Task → metrics (accuracy, n_answers, n_reflections, verdict F1, mean_tokens, …)."""
    groups: dict[str, dict[str, Any]]
    """Group (in_domain, harder, out_of_domain, overall) → mean metrics."""
    tokens: dict[str, list[int]] = field(default_factory=dict)
    """Task → response tokens of every sample, from `eval/<label>/<task>.jsonl`."""


@dataclass
class Run:
    """What one run folder holds; `None` or empty where a file is missing."""

    path: Path
    name: str
    spec: dict[str, Any]
    """The run spec as `run.json` stores it (empty without `run.json`)."""
    models: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    stage1: dict[str, Any] | None = None
    sft: dict[str, Any] | None = None
    grpo_steps: list[dict[str, Any]] = field(default_factory=list)
    grpo_summary: dict[str, Any] | None = None
    evals: list[ModelEval] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """What the report lacks, in words (e.g. "data/summary.json: stage 1 not run")."""
    problems: list[str] = field(default_factory=list)
    """Files that exist but could not be read, and lines skipped."""

    @property
    def where(self) -> str:
        """The run folder as the report names it: relative to the working directory the report
        is made in, so that a shared report carries no machine's absolute paths."""
        return shown_path(self.path)

    @property
    def baseline(self) -> str:
        """The spec's baseline (`skillfactory` when unknown)."""
        return str(self.spec.get("baseline") or "skillfactory")

    @property
    def model(self) -> str:
        """The spec's base model (else stage 1's, else "?")."""
        stage1 = self.stage1 or {}
        return str(self.spec.get("model") or self.models.get("base") or stage1.get("model") or "?")

    @property
    def task(self) -> str:
        """Stage 1's task, which the eval groups are relative to (else "?")."""
        stage1 = self.stage1 or {}
        return str(_section(self.spec, "data").get("task") or stage1.get("task") or "?")

    @property
    def composition(self) -> str:
        """Stage 1's composition (the method's own, an ablation or `star`)."""
        return str(_section(self.spec, "data").get("composition") or "skillfactory")

    def provenance(self) -> str:
        """Which run and spec: name, folder, baseline, model, task."""
        return (
            f"run {self.name} ({self.where}) · baseline {self.baseline} · model {self.model} · "
            f"task {self.task}"
        )


def shown_path(path: Path) -> str:
    """`path` relative to the working directory (with `..` where it lies outside it)."""
    return Path(os.path.relpath(path, Path.cwd())).as_posix()


def read_run(path: Path) -> Run:
    """Everything the report uses from one run folder; never raises on missing or bad files."""
    path = Path(path).resolve()
    reader = _Reader(path)
    record = reader.json(Path(RUN_FILE)) or {}
    spec = _dict(record.get("spec"))
    run = Run(path=path, name=str(spec.get("name") or path.name), spec=spec)
    run.models = _str_dict(record.get("models"))
    run.seconds = {k: v for k, v in _dict(record.get("seconds")).items() if _is_number(v)}
    run.stage1 = reader.json(STAGE1_SUMMARY)
    run.sft = reader.json(SFT_RESULT)
    run.grpo_steps = reader.jsonl(GRPO_STEPS)
    run.grpo_summary = reader.json(GRPO_SUMMARY)
    run.evals = read_evals(reader, run)
    run.missing = missing_parts(run, reader)
    run.problems = reader.problems
    return run


def read_evals(reader: _Reader, run: Run) -> list[ModelEval]:
    """The models of `eval/summary.json`, or of `eval/<label>/aggregate.json` without it."""
    summary = reader.json(EVAL_SUMMARY)
    if summary is None and (reader.root / EVAL_DIR).is_dir():
        summary = {}
        for folder in sorted((reader.root / EVAL_DIR).iterdir()):
            aggregate = reader.json(EVAL_DIR / folder.name / EVAL_AGGREGATE, optional=True)
            if folder.is_dir() and aggregate is not None:
                summary[folder.name] = aggregate
        summary = summary or None
    evals: list[ModelEval] = []
    for label, value in sorted((summary or {}).items(), key=lambda item: _label_key(item[0])):
        entry = _dict(value)
        tasks = {k: _dict(v) for k, v in _dict(entry.get("tasks")).items()}
        model = ModelEval(
            label=label,
            method=method_name(run.baseline, label, run.composition),
            model=str(entry.get("model", run.models.get(label, "?"))),
            tasks=tasks,
            groups={k: _dict(v) for k, v in _dict(entry.get("groups")).items()},
        )
        for task in tasks:
            records = reader.jsonl(EVAL_DIR / label / f"{task}.jsonl")
            counts = [r["tokens"] for r in records if isinstance(r.get("tokens"), int)]
            if counts:
                model.tokens[task] = counts
        evals.append(model)
    return evals


def missing_parts(run: Run, reader: _Reader) -> list[str]:
    """What is not in the folder, saying whether the run was meant to have it."""
    stages = run.spec.get("stages")
    planned = list(stages) if isinstance(stages, list) else list(STAGE_FILES)
    skipped = SKIPPED_STAGES.get(run.baseline, ())
    missing: list[str] = []
    if not (run.path / RUN_FILE).exists():
        missing.append(f"{RUN_FILE}: no spec, model folders or stage times (not written by run)")
    for stage, files in STAGE_FILES.items():
        for relative in files:
            if (run.path / relative).exists():
                continue
            if stage == "eval" and run.evals:
                continue
            if stage in skipped:
                why = f"the {run.baseline} baseline skips stage {stage}"
            elif stage not in planned:
                why = f"stage {stage} is not in the spec's stages"
            else:
                why = f"stage {stage} has not finished"
            missing.append(f"{relative}: {why}")
    for model in run.evals:
        lacking = [task for task in model.tasks if task not in model.tokens]
        if lacking:
            missing.append(
                f"eval/{model.label}/: no per-sample token counts for {', '.join(lacking)}"
            )
    return missing


class _Reader:
    """Reads JSON files of one run folder, noting the ones it cannot read."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[str] = []

    def json(self, relative: Path, optional: bool = False) -> dict[str, Any] | None:
        path = self.root / relative
        if not path.is_file():
            return None
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            if not optional:
                self.problems.append(f"{relative}: unreadable ({error})")
            return None
        if not isinstance(value, dict):
            self.problems.append(f"{relative}: not a JSON object")
            return None
        return value

    def jsonl(self, relative: Path) -> list[dict[str, Any]]:
        path = self.root / relative
        if not path.is_file():
            return []
        records: list[dict[str, Any]] = []
        bad = 0
        for line in _lines(path):
            try:
                value = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(value, dict):
                records.append(value)
            else:
                bad += 1
        if bad:
            self.problems.append(f"{relative}: {bad} unreadable line(s) skipped")
        return records


def _lines(path: Path) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            yield from (line for line in handle if line.strip())
    except OSError:
        return


def _label_key(label: str) -> tuple[int, str]:
    return (LABEL_ORDER.index(label) if label in LABEL_ORDER else len(LABEL_ORDER), label)


def _section(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return _dict(spec.get(name))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str_dict(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _dict(value).items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
