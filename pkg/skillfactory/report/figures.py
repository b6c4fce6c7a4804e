"""The report's figures, as PNG files (matplotlib, Agg backend: no display needed).

- `length_histograms`: per run, one panel per evaluated model: the response tokens of every eval
  sample (all tasks), from `eval/<label>/<task>.jsonl`;
- `grpo_curves`: per run, reward mean (the rollout accuracy, since the reward is binary) and loss
  over GRPO policy versions, from `grpo/steps.jsonl`.

Every figure's title names the run, its folder and its spec (baseline, model, task).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillfactory.report.collect import Run

DPI = 100
BINS = 30


@dataclass
class Figure:
    """A PNG the report shows, with its caption and the run it was drawn from."""

    path: Path
    title: str
    caption: str
    run: Run


def _pyplot() -> Any:
    # deferred: heavy or optional (matplotlib)
    import matplotlib

    matplotlib.use("Agg")
    # deferred: heavy or optional (matplotlib)
    import matplotlib.pyplot as plt

    return plt


def length_histograms(run: Run, path: Path) -> Figure | None:
    """Response-length histograms of the run's models, written to `path`; None when it has no eval
    token counts."""
    models = [model for model in run.evals if model.tokens]
    if not models:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(
        len(models), 1, figsize=(8, 1.2 + 1.8 * len(models)), sharex=True, squeeze=False
    )
    highest = max(max(counts) for m in models for counts in m.tokens.values())
    bins = _bins(highest)
    for ax, model in zip(axes[:, 0], models, strict=True):
        counts = [n for task_counts in model.tokens.values() for n in task_counts]
        ax.hist(counts, bins=bins, color="#4c72b0", edgecolor="white")
        mean = sum(counts) / len(counts)
        ax.axvline(mean, color="#c44e52", linestyle="--", linewidth=1)
        ax.set_title(
            f"{model.method} ({model.label}): {len(counts)} responses, mean {mean:.1f} tokens",
            fontsize=9,
        )
        ax.set_ylabel("responses", fontsize=8)
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel("response tokens (all eval tasks)", fontsize=8)
    title = f"Response lengths · {run.name}"
    _save(plt, figure, title, run, path)
    tasks = sorted({task for m in models for task in m.tokens})
    caption = f"{title}: tokens per eval response over {', '.join(tasks)}. {run.provenance()}"
    return Figure(path, title, caption, run)


def grpo_curves(run: Run, path: Path) -> Figure | None:
    """Reward mean and loss per GRPO policy version, written to `path`; None when the run logged
    no GRPO step."""
    steps = [s for s in run.grpo_steps if _number(s.get("version"))]
    if not steps:
        return None
    plt = _pyplot()
    figure, (reward_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
    versions = [s["version"] for s in steps]
    rewards = [s.get("reward_mean") for s in steps]
    losses = [s.get("loss") for s in steps]
    _curve(reward_ax, versions, rewards, "reward mean (rollout accuracy)", "#55a868")
    reward_ax.set_ylim(-0.02, 1.02)
    _curve(loss_ax, versions, losses, "loss", "#c44e52")
    title = f"GRPO · {run.name}"
    _save(plt, figure, title, run, path)
    caption = (
        f"{title}: reward mean and loss at each of {len(steps)} policy versions "
        f"(grpo/steps.jsonl). {run.provenance()}"
    )
    return Figure(path, title, caption, run)


def _curve(ax: Any, versions: list[Any], values: list[Any], name: str, color: str) -> None:
    points = [(v, y) for v, y in zip(versions, values, strict=True) if _number(y)]
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, color=color)
    # deferred: heavy or optional (matplotlib)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("policy version", fontsize=8)
    ax.set_title(name, fontsize=9)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)


def _save(plt: Any, figure: Any, title: str, run: Run, path: Path) -> None:
    """Title the figure with the run and spec that produced it, write the PNG, free it."""
    figure.suptitle(
        f"{title}\n{run.where} · baseline {run.baseline} · model {_short(run.model)} · "
        f"task {run.task}",
        fontsize=9,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _bins(highest: int) -> list[float]:
    width = max(1, -(-(highest + 1) // BINS))
    return [b - 0.5 for b in range(0, highest + width + 1, width)]


def _short(model: str) -> str:
    """A model path's last two parts (figures are narrow); hub ids and names stay whole."""
    parts = Path(model).parts
    return str(Path(*parts[-2:])) if model.startswith("/") and len(parts) > 2 else model


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
