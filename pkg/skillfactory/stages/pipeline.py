"""The pipeline: a run spec's stages in order.

    data (stage 1) → sft (stage 2) → grpo (stage 3) → eval

Baselines change the chain (design §1): `rl-only` skips data and SFT and runs GRPO from the base
model; `star` composes correct-only traces (STaR) for SFT, then GRPO; `distill` fine-tunes on
`sft.dataset` instead of stage 1's output. Every stage writes under `<output_dir>/<run>/` and a
re-run picks up where the last one stopped: stage 1 skips finished chunks, SFT and GRPO resume
from their checkpoints, and a finished SFT or GRPO stage is not run again. Each stage object says
where its outputs are (`model_dir()`, `is_finished()`); the pipeline knows no stage's folders.

Evaluation covers every model the run has: `base`, `sft` and `grpo`, on held-out problems.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skillfactory.engines.base import Engine
from skillfactory.engines.setup import engine_batch_rows, spec_engine_factory
from skillfactory.eval.harness import eval_dir, evaluate
from skillfactory.models.registry import is_model_folder, resolve_model
from skillfactory.run_folder import run_dir
from skillfactory.runspec import RunSpec, Stage, hub_dataset
from skillfactory.stages.data import SUMMARY_FILE as DATA_SUMMARY
from skillfactory.stages.data import Stage1, data_dir, sft_dataset_path
from skillfactory.stages.events import (
    DataProgress,
    EvalTaskDone,
    EventCallback,
    GRPOStep,
    StageFinished,
    StageStarted,
)
from skillfactory.stages.grpo import GRPOStage, grpo_dir
from skillfactory.stages.rollouts import Cluster, remote_engine_factory
from skillfactory.stages.sft import SFTStage, sft_folder
from skillfactory.tracking import NullTracker, Tracker, eval_metrics, open_tracker
from skillfactory.train.ranks import RankGroup

RESULT_FILE = "run.json"


def _links(folder: str, names: list[str]) -> list[str]:
    return [name for name in names if (Path(folder) / name).is_symlink()]


def effective_spec(spec: RunSpec) -> RunSpec:
    """The spec as the baseline runs it: `star` composes correct-only traces."""
    if spec.baseline == "star" and spec.data.composition != "star":
        data = spec.data.model_copy(update={"composition": "star"})
        return spec.model_copy(update={"data": data})
    return spec


def stages_to_run(spec: RunSpec) -> list[Stage]:
    """The spec's stages minus those its baseline leaves out."""
    skipped: set[str] = set()
    if spec.baseline == "rl-only":
        skipped = {"data", "sft"}
    elif spec.baseline == "distill":
        skipped = {"data"}
    return [stage for stage in spec.stages if stage not in skipped]


class Pipeline:
    """Runs the stages of one spec; `models` collects the model folder each stage produced."""

    def __init__(
        self,
        spec: RunSpec,
        *,
        engine_factory: Callable[[str], Engine] | None = None,
        on_event: EventCallback | None = None,
        cluster: Cluster | None = None,
        ranks: RankGroup | None = None,
    ) -> None:
        self.spec = effective_spec(spec)
        self.dir = run_dir(self.spec)
        if engine_factory is None and cluster is not None:
            engine_factory = remote_engine_factory(cluster, self.spec.name)
        self.engine_factory = engine_factory or spec_engine_factory(self.spec)
        """Engines of stage 1 and eval: the spec's, or the rollout fleet's in the distributed
        mode (GRPO samples on the fleet through its own rollout tasks)."""
        self.on_event: EventCallback = on_event or (lambda event: None)
        self.cluster = cluster
        """Sampler workers and composer of the distributed mode (None: everything here)."""
        self.ranks = ranks
        """The other processes of a torchrun learner, which SFT and GRPO bring along."""
        self.models: dict[str, str] = {"base": str(resolve_model(self.spec.model))}
        self.results: dict[str, Any] = {}
        self.seconds: dict[str, float] = {}
        """Wall seconds of each stage run."""
        self.tracker: Tracker = NullTracker()
        """The run's experiment tracker while `run` runs (`tracking` section; leader only)."""
        self.runners: dict[Stage, Callable[[], dict[str, Any]]] = {
            "data": self.run_data,
            "sft": self.run_sft,
            "grpo": self.run_grpo,
            "eval": self.run_eval,
        }

    def run(self) -> dict[str, Any]:
        """Every stage to run, in order; returns `{stage: result}` (`run.json` also has the spec,
        the model folders and each stage's wall seconds)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.spec.reuse_from is not None:
            self.adopt_finished_stages(Path(self.spec.reuse_from))
        self.tracker = open_tracker(self.spec, leader=self.ranks is None or self.ranks.leads)
        try:
            for stage in stages_to_run(self.spec):
                started = time.perf_counter()
                self.on_event(StageStarted(stage))
                self.results[stage] = self.runners[stage]()
                self.seconds[stage] = round(time.perf_counter() - started, 2)
                self.on_event(StageFinished(stage, self.seconds[stage]))
                self._write_results()
        finally:
            self.tracker.finish()
            self.tracker = NullTracker()
        return self.results

    def adopt_finished_stages(self, earlier: Path) -> list[str]:
        """Copy the finished stage folders of the run folder `earlier` (data, sft, grpo) that
        this run has not got yet: the explicit way to reuse another run's work (symlinks inside
        it are not followed). Returns the stages taken over."""
        other = self.spec.model_copy(
            update={"output_dir": str(earlier.parent), "name": earlier.name, "reuse_from": None}
        )
        finished = {
            "data": (data_dir(other), (data_dir(other) / DATA_SUMMARY).exists()),
            "sft": (sft_folder(other), SFTStage(other, "", Path()).is_finished()),
            "grpo": (grpo_dir(other), GRPOStage(other, "", self.engine_factory).is_finished()),
        }
        mine = {
            "data": data_dir(self.spec),
            "sft": sft_folder(self.spec),
            "grpo": grpo_dir(self.spec),
        }
        taken = []
        for stage, (folder, done) in finished.items():
            if done and not mine[stage].exists():
                shutil.copytree(folder, mine[stage], ignore=_links)
                taken.append(stage)
        return taken

    def _write_results(self) -> None:
        record = {
            "spec": self.spec.model_dump(mode="json"),
            "models": self.models,
            "seconds": self.seconds,
            "results": self.results,
        }
        (self.dir / RESULT_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")

    # the stages ---------------------------------------------------------------------------------

    def sft_stage(self) -> SFTStage:
        """Stage 2 on `sft.dataset` when set, else on stage 1's output."""
        dataset = self.spec.sft.dataset
        source: Path | str = sft_dataset_path(self.spec) if dataset is None else dataset
        if isinstance(source, str) and hub_dataset(source) is None:
            source = Path(source)  # a local file; a Hub id (hf:…) stays an id
        return SFTStage(self.spec, self.models["base"], source, ranks=self.ranks)

    def grpo_stage(self) -> GRPOStage:
        """Stage 3 from the SFT model when this run has one, else from the base model."""
        sft_model = self.sft_stage().model_dir()
        start = self.models["base"]
        if self.spec.baseline != "rl-only" and is_model_folder(sft_model):
            self.models.setdefault("sft", str(sft_model))
            start = str(sft_model)
        return GRPOStage(
            self.spec,
            start,
            self.engine_factory,
            cluster=self.cluster,
            ranks=self.ranks,
            tracker=self.tracker,
        )

    def run_data(self) -> dict[str, Any]:
        """Stage 1: sample, reflect, filter, compose the silver SFT dataset (composed by the
        cluster's composer when it has one)."""
        engine = self.engine_factory(self.models["base"])
        compose = self.cluster.compose if self.cluster is not None else None
        try:
            stage = Stage1(
                self.spec,
                engine,
                max_batch_rows=engine_batch_rows(self.spec.engine),
                compose=compose,
            )
            return stage.run(lambda done, total, _: self.on_event(DataProgress(done, total)))
        finally:
            engine.close()

    def run_sft(self) -> dict[str, Any]:
        """Stage 2 with TRL's SFTTrainer; a finished SFT stage is reused."""
        stage = self.sft_stage()
        result = stage.run()
        self.models["sft"] = str(stage.model_dir())
        return result

    def run_grpo(self) -> dict[str, Any]:
        """Stage 3; a finished GRPO stage is reused."""
        stage = self.grpo_stage()
        if stage.is_finished():
            result = {**stage.summary(), "reused": True}
        else:
            result = stage.run(lambda record: self.on_event(GRPOStep(record)))
        self.models["grpo"] = str(stage.model_dir())
        return result

    def run_eval(self) -> dict[str, Any]:
        """Evaluate every model the run has on held-out problems."""
        for label, folder in (
            ("sft", self.sft_stage().model_dir()),
            ("grpo", self.grpo_stage().model_dir()),
        ):
            if label not in self.models and is_model_folder(folder):
                self.models[label] = str(folder)
        summary = evaluate(
            self.spec,
            self.models,
            eval_dir(self.spec),
            engine_factory=self.engine_factory,
            on_task=lambda label, task, metrics: self.on_event(EvalTaskDone(label, task, metrics)),
        )
        for label in self.models:
            if label in summary:
                self.tracker.log_metrics(eval_metrics(f"final/{label}", summary[label]["tasks"]))
        return summary
