"""The embedded pipeline: a run spec's stages in order, in one process.

    data (stage 1) → sft (stage 2) → grpo (stage 3) → eval

Baselines change the chain (design §1): `rl-only` skips data and SFT and runs GRPO from the base
model; `star` composes correct-only traces (STaR) for SFT, then GRPO; `distill` fine-tunes on
`sft.dataset` instead of stage 1's output. Every stage writes under `<output_dir>/<run>/` and a
re-run picks up where the last one stopped: stage 1 skips finished chunks, SFT and GRPO resume
from their checkpoints, and a finished SFT or GRPO stage is not run again.

Evaluation covers every model the run has: `base`, `sft` and `grpo` (the folders the stages
wrote), on held-out problems.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skillfactory.engines.base import Engine
from skillfactory.engines.setup import engine_batch_rows, spec_engine_factory
from skillfactory.runspec import RunSpec, Stage
from skillfactory.stages.rollouts import Cluster
from skillfactory.train.ranks import leader

EventCallback = Callable[[str, dict[str, Any]], None]
"""Called with (stage, event) as stages start, progress and finish."""

RESULT_FILE = "run.json"


def run_dir(spec: RunSpec) -> Path:
    """The folder of this run."""
    return Path(spec.output_dir) / spec.name


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
    ) -> None:
        from skillfactory.models.registry import resolve_model

        self.spec = effective_spec(spec)
        self.dir = run_dir(self.spec)
        self.engine_factory = engine_factory or spec_engine_factory(self.spec)
        self.on_event = on_event or (lambda stage, event: None)
        self.cluster = cluster
        """Sampler workers of the distributed mode for GRPO (None: a sampler thread here)."""
        self.models: dict[str, str] = {"base": str(resolve_model(self.spec.model))}
        self.results: dict[str, Any] = {}
        self.seconds: dict[str, float] = {}
        """Wall seconds of each stage run."""

    def run(self) -> dict[str, Any]:
        """Every stage to run, in order; returns `{stage: result}` (`run.json` also has the spec,
        the model folders and each stage's wall seconds)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for stage in stages_to_run(self.spec):
            started = time.perf_counter()
            self.on_event(stage, {"event": "started"})
            self.results[stage] = getattr(self, f"run_{stage}")()
            self.seconds[stage] = round(time.perf_counter() - started, 2)
            self.on_event(stage, {"event": "finished", "seconds": self.seconds[stage]})
            self._write_results()
        return self.results

    def _write_results(self) -> None:
        record = {
            "spec": self.spec.model_dump(mode="json"),
            "models": self.models,
            "seconds": self.seconds,
            "results": self.results,
        }
        (self.dir / RESULT_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")

    def run_data(self) -> dict[str, Any]:
        """Stage 1: sample, reflect, filter, compose the silver SFT dataset (composed by the
        cluster's composer service when it has one)."""
        from skillfactory.stages.data import Stage1

        engine = self.engine_factory(self.models["base"])
        composer = None
        try:
            if self.cluster and self.cluster.composer_address:
                from skillfactory.serving.composer_client import ComposerClient

                composer = ComposerClient(self.cluster.composer_address, self.cluster.token)
            rows = engine_batch_rows(self.spec.engine)
            compose = composer.compose if composer else None
            return Stage1(self.spec, engine, max_batch_rows=rows, compose=compose).run(
                lambda done, total, samples: self.on_event(
                    "data", {"event": "progress", "done": done, "total": total}
                )
            )
        finally:
            engine.close()
            if composer is not None:
                composer.close()

    def sft_dataset(self) -> Path:
        """The chats SFT trains on: `sft.dataset` when set, else stage 1's output."""
        from skillfactory.stages.data import SFT_FILE, data_dir

        if self.spec.sft.dataset is not None:
            return Path(self.spec.sft.dataset)
        return data_dir(self.spec) / SFT_FILE

    def run_sft(self) -> dict[str, Any]:
        """Stage 2 with TRL's SFTTrainer; a finished SFT stage is reused."""
        from skillfactory.train.sft import MODEL_DIR, RESULT_FILE, run_sft

        out = self.dir / "sft"
        if (out / RESULT_FILE).exists() and (out / MODEL_DIR / "config.json").exists():
            result: dict[str, Any] = json.loads((out / RESULT_FILE).read_text())
            result["reused"] = True
        else:
            arguments = (self.models["base"], str(self.sft_dataset()), str(out), self.spec.seed)
            ranks = leader()
            if ranks is not None:  # every rank of a torchrun learner trains its share
                ranks.tell("sft", self.spec.sft.model_dump_json(), *arguments)
            result = run_sft(self.spec.sft, *arguments).to_dict()
        self.models["sft"] = str(out / MODEL_DIR)
        return result

    def grpo_start_model(self) -> str:
        """GRPO starts from the SFT model when this run has one, else from the base model."""
        from skillfactory.train.sft import MODEL_DIR

        sft_model = self.dir / "sft" / MODEL_DIR
        if self.spec.baseline != "rl-only" and (sft_model / "config.json").exists():
            self.models.setdefault("sft", str(sft_model))
            return str(sft_model)
        return self.models["base"]

    def run_grpo(self) -> dict[str, Any]:
        """Stage 3: sampler and learner overlapping through the in-process queue."""
        from skillfactory.stages.grpo import SUMMARY_FILE, GRPOStage, grpo_dir

        out = grpo_dir(self.spec)
        summary_path = out / SUMMARY_FILE
        if summary_path.exists() and (out / "model" / "config.json").exists():
            summary: dict[str, Any] = json.loads(summary_path.read_text())
            if summary.get("steps", 0) >= self.spec.grpo.steps:
                self.models["grpo"] = str(out / "model")
                return {**summary, "reused": True}
        stage = GRPOStage(
            self.spec, self.grpo_start_model(), self.engine_factory, cluster=self.cluster
        )
        result = stage.run(lambda step: self.on_event("grpo", {"event": "step", **step}))
        self.models["grpo"] = str(out / "model")
        return result

    def run_eval(self) -> dict[str, Any]:
        """Evaluate every model the run has on held-out problems."""
        from skillfactory.eval.harness import evaluate

        for label, folder in (
            ("sft", self.dir / "sft" / "model"),
            ("grpo", self.dir / "grpo" / "model"),
        ):
            if label not in self.models and (folder / "config.json").exists():
                self.models[label] = str(folder)
        return evaluate(
            self.spec,
            self.models,
            self.dir / "eval",
            engine_factory=self.engine_factory,
            on_task=lambda label, task, metrics: self.on_event(
                "eval", {"event": "task", "model": label, "task": task, **metrics}
            ),
        )
