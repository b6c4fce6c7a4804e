"""Where GRPO's groups come from: a sampler thread in the learner's process, or sampler workers
of rollout services in other processes.

Both sides take prompts from the same `PromptStream` under the same `AdmissionController`, so the
staleness bound and the every-prompt-once bookkeeping are the learner's in both modes.

- `EmbeddedRollouts` (one process): an engine and a `Sampler` thread; new weights are handed to
  the engine in process between two generate calls.
- `RemoteRollouts` (distributed mode, `Cluster`): a `PromptFeeder` thread puts rollout tasks on
  the shared queue; sampler workers anywhere take them. New weights are published to a weight
  store on the shared volume, one folder per version, which the workers catch up from before each
  engine call. Each learner start is a new *epoch* with its own store folder; groups of another
  epoch (asked for by a learner that died) are dropped, and their prompts are asked for again.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from skillfactory.engines.base import Engine, SamplingParams
from skillfactory.group import Group
from skillfactory.models.registry import shared_model_uri
from skillfactory.queue import Queue, open_queue
from skillfactory.rollout.feeder import PromptFeeder, new_epoch, task_template
from skillfactory.rollout.remote_engine import RemoteEngine
from skillfactory.rollout.sampler import PromptStream, Sampler
from skillfactory.rollout.scoring import GroupScorer
from skillfactory.runspec import EngineSpec, RedisQueueSpec, RunSpec
from skillfactory.stages.data import ComposeFunction
from skillfactory.train.learner import Learner
from skillfactory.train.staleness import AdmissionController
from skillfactory.wire.weight_store import WeightPublisher, WeightStore

log = logging.getLogger(__name__)


def rollout_params(spec: RunSpec) -> SamplingParams:
    """Sampling of GRPO rollouts: the spec's temperature/top-p, no penalty, group_size samples."""
    return SamplingParams(
        n=spec.grpo.group_size,
        temperature=spec.grpo.temperature,
        top_p=spec.grpo.top_p,
        max_tokens=spec.grpo.max_response_length,
    )


@dataclass(frozen=True)
class Cluster:
    """The distributed mode as the learner sees it."""

    queue: RedisQueueSpec
    """The queue the learner shares with the sampler workers (overrides the run spec's)."""
    weights_dir: Path
    """Root of the weight stores on the volume the rollout services share
    (`<weights_dir>/<run>/<epoch>/v<version>`)."""
    compose: ComposeFunction | None = None
    """How stage 1's traces are assembled (a composer service's client); None composes in
    process."""


def remote_engine_factory(
    cluster: Cluster, run_id: str, stall_timeout_s: float = 600.0
) -> Callable[[str], Engine]:
    """Engines of the distributed mode for stage 1 and eval: every generate call of the engine a
    model gets runs on the rollout services (`RemoteEngine`), over the cluster's queue."""

    def build(model: str) -> Engine:
        return RemoteEngine(
            open_queue(cluster.queue),
            shared_model_uri(model),
            run_id=run_id,
            stall_timeout_s=stall_timeout_s,
            owns_queue=True,
        )

    return build


class Rollouts(Protocol):
    """The sampling side of GRPO, as the learner loop drives it."""

    @property
    def error(self) -> BaseException | None:
        """What stopped the sampling side, if anything (the learner re-raises it)."""
        ...

    @property
    def groups_asked(self) -> int:
        """Groups sampled (embedded) or asked for (remote) so far."""
        ...

    def start(self) -> None: ...

    def publish(self, learner: Learner) -> None:
        """Make the learner's new weights the samplers' (after each step)."""
        ...

    def owns(self, group: Group) -> bool:
        """Whether `group` was asked for by this learner (not a previous incarnation)."""
        ...

    def pause(self) -> None:
        """The learner is about to train (sleep mode: the engine frees the GPU until `resume`)."""
        ...

    def resume(self) -> None:
        """The learner has trained and published: sampling may go on."""
        ...

    def close(self) -> None: ...


class EmbeddedRollouts:
    """An engine and a sampler thread in the learner's process."""

    def __init__(
        self,
        spec: RunSpec,
        engine: Engine,
        score: GroupScorer,
        prompts: PromptStream,
        admission: AdmissionController,
        queue: Queue,
        *,
        learner: Learner,
        prompts_per_call: int,
        seed: int,
        threads: int | None,
    ) -> None:
        self.engine = engine
        self.lock = threading.RLock()
        self.sleeps = getattr(spec.engine, "enable_sleep_mode", False) and hasattr(engine, "sleep")
        """Sleep mode (vLLM sharing the learner's GPU): the engine sleeps, and the sampler waits,
        while the learner trains; the weight load after the step wakes it."""
        self._paused = False
        if learner.version > 0:
            engine.load_weights(learner.weights(), learner.version)
        self.sampler = Sampler(
            engine,
            score,
            rollout_params(spec),
            prompts,
            admission,
            queue,
            prompts_per_call=prompts_per_call,
            engine_lock=self.lock,
            seed=seed,
            run_id=spec.name,
            threads=threads,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def error(self) -> BaseException | None:
        return self.sampler.error

    @property
    def groups_asked(self) -> int:
        return self.sampler.groups_sampled

    def start(self) -> None:
        self._thread = self.sampler.start(self._stop)

    def publish(self, learner: Learner) -> None:
        with self.lock:
            self.engine.load_weights(learner.weights(), learner.version)

    def owns(self, group: Group) -> bool:
        return True

    def pause(self) -> None:
        if self.sleeps and not self._paused:
            self.lock.acquire()
            self._paused = True
            self.engine.sleep()  # type: ignore[attr-defined]

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            try:
                self.engine.wake_up()  # type: ignore[attr-defined]
            finally:
                self.lock.release()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.engine.close()


class RemoteRollouts:
    """Rollout tasks on the shared queue and a weight store on the shared volume."""

    def __init__(
        self,
        spec: RunSpec,
        cluster: Cluster,
        model_path: str,
        prompts: PromptStream,
        admission: AdmissionController,
        queue: Queue,
        learner: Learner,
    ) -> None:
        self.epoch = new_epoch()
        self.run_id = spec.name
        run_root = cluster.weights_dir / spec.name
        drop_old_epochs(run_root)
        self.store = WeightStore(run_root / self.epoch)
        self.publisher = WeightPublisher(self.store, publish_dtype(spec.engine), self.run_id)
        if learner.version > 0:
            self.publisher.submit(learner.weights(), learner.version)
        template = task_template(
            self.run_id,
            self.epoch,
            rollout_params(spec),
            model_uri=shared_model_uri(model_path),
            weights_uri=str(self.store.root.resolve()),
        )
        self.feeder = PromptFeeder(
            queue, prompts, admission, template, batch=spec.grpo.prompts_per_step
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        log.info("distributed GRPO epoch", extra={"epoch": self.epoch, "version": learner.version})

    @property
    def error(self) -> BaseException | None:
        return self.feeder.error

    @property
    def groups_asked(self) -> int:
        return self.feeder.tasks_sent

    def start(self) -> None:
        self._thread = self.feeder.start(self._stop)

    def publish(self, learner: Learner) -> None:
        """Hand the new version to the background publisher (the next step starts while it is
        written; the samplers catch up once it is verified on disk)."""
        self.publisher.submit(learner.weights(), learner.version)

    def owns(self, group: Group) -> bool:
        return group.epoch == self.epoch

    def pause(self) -> None:
        """Rollout services own their GPUs: nothing to free."""

    def resume(self) -> None:
        """Nothing was paused."""

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.publisher.flush()


def publish_dtype(engine: EngineSpec) -> torch.dtype:
    """The dtype the rollout engines hold weights in: the spec's, or bf16 on GPUs and fp32 on
    CPUs for `auto` (what the transformers and vLLM engines choose)."""
    named = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    dtype = getattr(engine, "dtype", "auto")
    if dtype in named:
        return named[dtype]
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def drop_old_epochs(run_root: Path) -> None:
    """Remove the weight stores of earlier learner epochs of a run."""
    if run_root.is_dir():
        for old in run_root.iterdir():
            shutil.rmtree(old, ignore_errors=True)
