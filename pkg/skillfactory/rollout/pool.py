"""The workers inside a rollout service: sampler workers serving GRPO rollout tasks (graded with
a `GroupScorer`: the reward service's client, or in process) and generation workers serving stage
1's and eval's generation tasks, all through the service's one engine thread, which merges their
work. Started after the gRPC server, stopped before it: a worker finishes the batch in hand and
exits; tasks it had not acked stay pending and another worker reclaims them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillfactory.models.registry import cache_root, model_allowed
from skillfactory.queue.redis_streams import RedisStreamsQueue
from skillfactory.rollout.generation_worker import GenerateFor, GenerationWorker
from skillfactory.rollout.limits import GenerationLimits
from skillfactory.rollout.scoring import GroupScorer
from skillfactory.rollout.worker import (
    Admission,
    SamplerMetrics,
    SamplerWorker,
    TaskGenerate,
    TaskWorker,
)
from skillfactory.runspec import RedisQueueSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerConfig:
    """How a rollout service's sampler workers reach the queue."""

    queue: RedisQueueSpec
    """The queue shared with the learner."""
    workers: int = 1
    """Sampler threads (each takes its own tasks; they share the engine)."""
    tasks_per_call: int = 1
    """Rollout tasks sampled together in one engine call."""
    seed: int = 0
    """Sampling seed base (the task's prompt index is added)."""
    generators: int = 4
    """Generation worker threads (stage 1 and eval tasks); their requests are merged into the
    engine's calls, so more workers mean larger calls."""
    model_roots: tuple[Path, ...] = ()
    """Folders a task may name models and weight stores in (hub ids and short names always
    pass); empty: the working directory and the model cache."""
    limits: GenerationLimits = GenerationLimits()
    """Per-request caps; a task over one goes to the dead letters."""
    generation_tasks_per_call: int = 4
    """Generation tasks one worker takes at a time (small, so that a call's tasks spread over
    every replica instead of piling on the first workers to ask)."""
    max_deliveries: int = Admission.max_deliveries
    """Deliveries of a task without an ack (it crashed or stalled every worker that took it)
    before it goes to the dead letters."""


class SamplerPool:
    """The sampler workers of one rollout service."""

    def __init__(
        self,
        config: SamplerConfig,
        generate: TaskGenerate,
        score: GroupScorer,
        metrics: SamplerMetrics | None = None,
        name: str = "",
        generate_for: GenerateFor | None = None,
    ) -> None:
        self.config = config
        self.queue = RedisStreamsQueue.from_spec(config.queue)
        prefix = name or f"{socket.gethostname()}-{os.getpid()}"
        admission = Admission(
            max_deliveries=config.max_deliveries,
            model_allowed=model_allowed(config.model_roots or (Path.cwd(), cache_root())),
            limits=config.limits,
        )
        self.workers: list[TaskWorker[Any]] = [
            SamplerWorker(
                self.queue,
                generate,
                score,
                worker_id=f"{prefix}-{i}",
                tasks_per_call=config.tasks_per_call,
                claim_idle_s=config.queue.claim_idle_ms / 1000,
                seed=config.seed,
                metrics=metrics,
                admission=admission,
            )
            for i in range(config.workers)
        ]
        if generate_for is not None:
            self.workers += [
                GenerationWorker(
                    self.queue,
                    generate_for,
                    worker_id=f"{prefix}-g{i}",
                    tasks_per_call=config.generation_tasks_per_call,
                    claim_idle_s=config.queue.claim_idle_ms / 1000,
                    metrics=metrics,
                    admission=admission,
                )
                for i in range(config.generators)
            ]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [worker.start(self._stop) for worker in self.workers]
        log.info("sampler workers started", extra={"workers": len(self.workers)})

    def stop(self, timeout_s: float = 60.0) -> None:
        """Let the workers finish their batches, all within `timeout_s`, then close the queue
        (a worker still busy then is a daemon thread; its tasks stay pending for others)."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.queue.close()
