"""Sampler workers inside a rollout service: threads that serve rollout tasks from the shared
queue with the service's engine (its `generate_task`) and grade with a `GroupScorer` (the reward
service's client, or in process). Started after the gRPC server, stopped before it: a worker
finishes the batch in hand and exits; tasks it had not acked stay pending and another sampler
reclaims them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass

from skillfactory.queue.redis_streams import RedisStreamsQueue
from skillfactory.rollout.scoring import GroupScorer
from skillfactory.rollout.worker import SamplerMetrics, SamplerWorker, TaskGenerate
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


class SamplerPool:
    """The sampler workers of one rollout service."""

    def __init__(
        self,
        config: SamplerConfig,
        generate: TaskGenerate,
        score: GroupScorer,
        metrics: SamplerMetrics | None = None,
        name: str = "",
    ) -> None:
        self.config = config
        self.queue = RedisStreamsQueue.from_spec(config.queue)
        prefix = name or f"{socket.gethostname()}-{os.getpid()}"
        self.workers = [
            SamplerWorker(
                self.queue,
                generate,
                score,
                worker_id=f"{prefix}-{i}",
                tasks_per_call=config.tasks_per_call,
                claim_idle_s=config.queue.claim_idle_ms / 1000,
                seed=config.seed,
                metrics=metrics,
            )
            for i in range(config.workers)
        ]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [worker.start(self._stop) for worker in self.workers]
        log.info("sampler workers started", extra={"workers": len(self.workers)})

    def stop(self, timeout_s: float = 60.0) -> None:
        """Let each worker finish its batch, then close the queue."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self.queue.close()
