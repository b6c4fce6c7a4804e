"""Experiment tracking: step metrics, eval metrics and tables of sampled completions, logged to
wandb, trackio or nowhere (`RunSpec.tracking`).

One small interface, `Tracker`, with three implementations: `NullTracker` (the default: logs
nothing) and `LibraryTracker` (wandb or trackio). Only the leading process of a run opens one
(`open_tracker`); the GRPO stage logs each step's record and, every `completions_every` steps, a
table of sampled completions; evaluation (during GRPO and at the end) logs its metrics.

wandb follows its own environment (`WANDB_MODE=offline` writes the run under `WANDB_DIR` with no
network; `WANDB_API_KEY` for online runs); trackio writes a local SQLite database under
`TRACKIO_DIR` (default `~/.cache/huggingface/trackio`). Both are optional dependencies (the
`tracking` extra); asking for a backend that is not installed is an error naming the extra.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from skillfactory.group import Group
from skillfactory.runspec import RunSpec, TrackingSpec

COMPLETION_COLUMNS = ("step", "prompt", "completion", "reward", "policy_version", "staleness")
"""Columns of a completions table."""


class Tracker(Protocol):
    """Where a run's metrics go."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Scalars under their names (e.g. `train/loss`, `eval/countdown-3/accuracy`)."""
        ...

    def log_table(
        self,
        name: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        step: int | None = None,
    ) -> None:
        """A table (e.g. sampled completions) under `name`."""
        ...

    def finish(self) -> None:
        """Flush and close the tracked run."""
        ...


class NullTracker:
    """Logs nothing (tracking backend `none`)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_table(
        self,
        name: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        step: int | None = None,
    ) -> None:
        pass

    def finish(self) -> None:
        pass


class LibraryTracker:
    """A run of a tracking library with wandb's interface (`init`, `run.log`, `Table`,
    `run.finish`): wandb (online, or offline with `WANDB_MODE=offline`) or trackio (a local
    SQLite database under `TRACKIO_DIR`)."""

    def __init__(
        self, package: str, project: str, run_name: str, config: Mapping[str, Any]
    ) -> None:
        try:
            library = importlib.import_module(package)  # optional: the `tracking` extra
        except ImportError as error:
            raise _missing(package) from error
        self._library = library
        self.run = library.init(project=project, name=run_name, config=dict(config))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.run.log(dict(metrics), step=step)

    def log_table(
        self,
        name: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        step: int | None = None,
    ) -> None:
        table = self._library.Table(columns=list(columns), data=[list(row) for row in rows])
        self.run.log({name: table}, step=step)

    def finish(self) -> None:
        self.run.finish()


def _missing(package: str) -> ImportError:
    return ImportError(
        f"tracking.backend {package} needs the {package} package: "
        "pip install 'skillfactory[tracking]'"
    )


def open_tracker(spec: RunSpec, *, leader: bool = True) -> Tracker:
    """The tracker a run spec asks for; a `NullTracker` for backend `none` and on every process
    but the leader."""
    tracking: TrackingSpec = spec.tracking
    if not leader or tracking.backend == "none":
        return NullTracker()
    name = tracking.run_name or spec.name
    config = spec.model_dump(mode="json")
    return LibraryTracker(tracking.backend, tracking.project, name, config)


def step_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of a `steps.jsonl` record under `train/` (staleness as `train/staleness/<k>`,
    queue levels as `queue/<stream>/<depth|pending>`); lists and text are left out."""
    metrics: dict[str, float] = {}
    for key, value in record.items():
        if key == "staleness" and isinstance(value, Mapping):
            metrics.update({f"train/staleness/{k}": float(v) for k, v in value.items()})
        elif key == "queue" and isinstance(value, Mapping):
            for stream, level in value.items():
                for part, count in dict(level).items():
                    metrics[f"queue/{stream}/{part}"] = float(count)
        elif isinstance(value, int | float):  # bools too
            metrics[f"train/{key}"] = float(value)
    return metrics


def completion_rows(
    groups: Sequence[Group], step: int, learner_version: int, tokenizer: Any, limit: int
) -> list[list[Any]]:
    """Up to `limit` rows (`COMPLETION_COLUMNS`) of the completions a step trained on: the
    prompt as the model saw it, the completion text, its reward, the policy version that sampled
    it and its staleness (`learner_version` − that version)."""
    rows: list[list[Any]] = []
    for group in groups:
        prompt = _decode(tokenizer, group.prompt_token_ids, group.problem.question)
        for completion, reward in zip(group.completions, group.rewards, strict=True):
            if len(rows) >= limit:
                return rows
            rows.append(
                [
                    step,
                    prompt,
                    completion.text,
                    float(reward),
                    completion.policy_version,
                    learner_version - completion.policy_version,
                ]
            )
    return rows


def _decode(tokenizer: Any, token_ids: Sequence[int], fallback: str) -> str:
    if tokenizer is None or not token_ids:
        return fallback
    try:
        return str(tokenizer.decode(list(token_ids), skip_special_tokens=False))
    except Exception:  # a tokenizer that cannot decode: the question is still informative
        return fallback


def eval_metrics(prefix: str, results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Scalars of eval task metrics (`{task: metrics}`) as `<prefix>/<task>/<metric>`."""
    metrics: dict[str, float] = {}
    for task, values in results.items():
        for key, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[f"{prefix}/{task}/{key}"] = float(value)
    return metrics
