"""What the learner service accepts of a submitted run spec: paths inside the roots it was started
with, its own queue, and a run folder of the run's own.

`admit(spec, policy, run_id)` returns the spec the service runs, or raises `InvalidRunSpec` naming
each field that breaks the policy (answered INVALID_ARGUMENT at submit time):

- `queue`: replaced by the in-process queue — the service's own configuration (`--redis-url`)
  decides where GRPO's work goes and with which password; a spec never picks a host or a secret;
- `output_dir`: resolved against the data root (relative paths land under it) and must stay inside
  it (`..` and symlinks resolved); the run then writes to `<output_dir>/<run id>/<name>`, so two
  runs never share outputs whatever their names (the name is a label). Reusing an earlier run's
  finished stages is the explicit `reuse_from` field, a run folder inside the data root;
- `model`: a hub id or a registered short name, or a folder inside a model root or the data root;
- `sft.dataset`: a Hub dataset id (`hf:<org>/<name>[:<split>]`, kept as it is, like a hub model
  id), or a file inside a dataset root or the data root;
- `datasets[i].path` / `test_path` (tasks of one's own data): files inside a dataset root or the
  data root, like `sft.dataset` (a `hub` id is kept as it is);
- `grpo.rewards`: a plugin (`package.module:function`) is code execution, refused unless the
  service was started with `--allow-reward-plugins` (`allow_reward_plugins`).
Whether a path exists is not checked here, so submitting reveals nothing about the filesystem
beyond the roots; reads happen when the run does (SFT reads only regular files, within a size cap:
`skillfactory.train.sft.read_chat_dataset`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from skillfactory.models.registry import is_model_name, within
from skillfactory.runspec import (
    InProcessQueueSpec,
    InvalidRunSpec,
    RunSpec,
    SpecProblem,
    hub_dataset,
    is_plugin_reward,
)


@dataclass(frozen=True)
class RunPolicy:
    """The roots a learner service confines run specs to."""

    data_root: Path
    """Run outputs live under here (the shared volume in the chart)."""
    model_roots: tuple[Path, ...] = ()
    """Read-only folders models may be loaded from (besides the data root)."""
    dataset_roots: tuple[Path, ...] = ()
    """Read-only folders SFT datasets may be read from (besides the data root)."""
    allow_reward_plugins: bool = False
    """Admit specs whose `grpo.rewards` name import-path plugins (code the service runs)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_root", self.data_root.resolve())
        object.__setattr__(self, "model_roots", tuple(p.resolve() for p in self.model_roots))
        object.__setattr__(self, "dataset_roots", tuple(p.resolve() for p in self.dataset_roots))


def admit(spec: RunSpec, policy: RunPolicy, run_id: str) -> RunSpec:
    """The spec as the service runs it (see the module docstring); `InvalidRunSpec` otherwise."""
    problems: list[SpecProblem] = []
    data = (policy.data_root,)
    output = policy.data_root / spec.output_dir
    if not within(output, data):
        problems.append(
            SpecProblem(
                path="output_dir",
                value=spec.output_dir,
                message="must lie inside the learner's data root",
            )
        )
    if not is_model_name(spec.model) and not within(
        policy.data_root / spec.model, data + policy.model_roots
    ):
        problems.append(
            SpecProblem(
                path="model",
                value=spec.model,
                message="a hub id, a registered short name, or a folder inside the learner's model roots",
            )
        )
    local_dataset = spec.sft.dataset is not None and hub_dataset(spec.sft.dataset) is None
    if (
        local_dataset
        and spec.sft.dataset is not None
        and not within(policy.data_root / spec.sft.dataset, data + policy.dataset_roots)
    ):
        problems.append(
            SpecProblem(
                path="sft.dataset",
                value=spec.sft.dataset,
                message="must lie inside the learner's dataset roots",
            )
        )
    datasets = []
    for index, dataset in enumerate(spec.datasets):
        update = {}
        for field in ("path", "test_path"):
            value = getattr(dataset, field)
            if value is None:
                continue
            if not within(policy.data_root / value, data + policy.dataset_roots):
                problems.append(
                    SpecProblem(
                        path=f"datasets.{index}.{field}",
                        value=value,
                        message="must lie inside the learner's dataset roots",
                    )
                )
            update[field] = str(policy.data_root / value)
        datasets.append(dataset.model_copy(update=update))
    for index, reward in enumerate(spec.grpo.rewards):
        if is_plugin_reward(reward.name) and not policy.allow_reward_plugins:
            problems.append(
                SpecProblem(
                    path=f"grpo.rewards.{index}.name",
                    value=reward.name,
                    message="reward plugins run code: this learner was not started with "
                    "--allow-reward-plugins",
                )
            )
    if spec.reuse_from is not None and not within(policy.data_root / spec.reuse_from, data):
        problems.append(
            SpecProblem(
                path="reuse_from",
                value=spec.reuse_from,
                message="must lie inside the learner's data root",
            )
        )
    if problems:
        raise InvalidRunSpec(problems)
    return spec.model_copy(
        update={
            "queue": InProcessQueueSpec(),
            "output_dir": str(Path(os.path.realpath(output)) / run_id),
            "model": spec.model
            if is_model_name(spec.model)
            else str(policy.data_root / spec.model),
            "datasets": datasets,
            "reuse_from": None
            if spec.reuse_from is None
            else str(Path(os.path.realpath(policy.data_root / spec.reuse_from))),
            "sft": spec.sft
            if spec.sft.dataset is None or not local_dataset
            else spec.sft.model_copy(update={"dataset": str(policy.data_root / spec.sft.dataset)}),
        }
    )
