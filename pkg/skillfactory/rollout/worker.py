"""Sampler workers of the distributed mode: rollout tasks in, graded groups out.

A worker (a thread of the rollout service) loops:

1. take rollout tasks from the `prompts` stream (consumer group `samplers`); first *reclaim* the
   tasks left pending by a sampler that died (idle longer than `claim_idle_s`), then new ones;
2. sample `n` completions of each with the rollout service's engine, caught up to the newest
   weights the learner published (`EngineSlot.prepare`);
3. grade them — with the reward service when one is configured, else in process;
4. put each group on the `groups` stream, tagged with the task's run, epoch and prompt index;
5. ack the tasks. Only now: a worker killed before this point leaves its tasks pending, and
   another worker reclaims them. A worker killed between 4 and 5 makes a reclaimed task yield a
   second group for the same prompt; the learner trains on the first and drops the other, so a
   prompt is never trained on twice.

A task that cannot be sampled or graded (reward service down, engine error) is not acked: the
worker backs off and the task is retried after `claim_idle_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Generic, TypeVar

from skillfactory.engines.base import Completion, Prompt, SamplingParams
from skillfactory.queue import Entry, Queue, UndecodablePayload, put_message, read_messages
from skillfactory.rollout.limits import GenerationLimits
from skillfactory.rollout.sampler import grpo_prompt, make_group
from skillfactory.rollout.scoring import GroupScorer
from skillfactory.rollout.streams import (
    DEAD_LETTER_STREAM,
    GROUPS_STREAM,
    PROMPTS_STREAM,
    SAMPLERS_GROUP,
)
from skillfactory.v1 import data_pb2
from skillfactory.wire.messages import (
    InvalidMessage,
    group_to_proto,
    problem_from_proto,
    sampling_from_proto,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

Task = TypeVar("Task", data_pb2.RolloutTask, data_pb2.GenerationTask)

TaskGenerate = Callable[
    [data_pb2.RolloutTask, Sequence[Prompt], SamplingParams], list[list[Completion]]
]
"""Samples the prompts of tasks that share a run, epoch and sampling (the first task stands for
them) with the right model and weights."""


class SamplerMetrics:
    """Sampler series in a service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Histogram  # optional: the serve extra

        self.groups_pushed = Counter(
            "skillfactory_sampler_groups_pushed",
            "Groups put on the queue by this service's sampler workers.",
            registry=registry,
        )
        self.tasks_reclaimed = Counter(
            "skillfactory_sampler_tasks_reclaimed",
            "Rollout tasks taken over from a sampler that stopped answering.",
            registry=registry,
        )
        self.dead_letters = Counter(
            "skillfactory_queue_dead_letters",
            "Tasks moved to the dead-letter stream (delivered too often, or invalid), by stream "
            "and reason.",
            ("stream", "reason"),
            registry=registry,
        )
        self.task_failures = Counter(
            "skillfactory_sampler_task_failures",
            "Batches of rollout tasks that failed (left pending for a retry), by stage.",
            ("stage",),
            registry=registry,
        )
        buckets = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
        self.reward_seconds = Histogram(
            "skillfactory_sampler_reward_seconds",
            "Time to grade one batch of groups (reward service call), in seconds.",
            buckets=buckets,
            registry=registry,
        )
        self.generate_seconds = Histogram(
            "skillfactory_sampler_generate_seconds",
            "Time to sample one batch of rollout tasks, in seconds.",
            buckets=buckets,
            registry=registry,
        )


def sampling_of(task: data_pb2.RolloutTask) -> SamplingParams:
    """How a task asks to sample its group."""
    return sampling_from_proto(task.sampling, int(task.n))


def compatible(a: data_pb2.RolloutTask, b: data_pb2.RolloutTask) -> bool:
    """Whether two tasks can share one engine call."""
    return (a.run_id, a.epoch, a.n, a.model_uri, a.weights_uri) == (
        b.run_id,
        b.epoch,
        b.n,
        b.model_uri,
        b.weights_uri,
    ) and a.sampling == b.sampling


@dataclass(frozen=True)
class Admission:
    """Which queued tasks a worker serves; the others go to the dead letters with the reason."""

    max_deliveries: int = 5
    """A task delivered more often than this without being acked (it crashes or stalls every
    worker that takes it) goes to the dead letters."""
    model_allowed: Callable[[str], bool] = lambda uri: True
    """Whether a task may name this model or weight store (the service's model roots)."""
    limits: GenerationLimits = field(default_factory=GenerationLimits)
    """The service's per-request caps (`max_tokens`, `n`, prompts)."""

    def refusal(
        self, params: SamplingParams, uris: Sequence[str], prompts: Sequence[Prompt] = ()
    ) -> str | None:
        """Why a task asking for `params` on `prompts`, naming `uris`, is not served."""
        for uri in uris:
            if uri and not self.model_allowed(uri):
                return f"invalid: {uri!r} is outside this service's model roots"
        over = self.limits.refusal(params, prompts)
        return f"over-limit: {over}" if over else None


class TaskWorker(Generic[Task]):
    """One worker loop over a task stream: reclaim a dead worker's tasks, take new ones, serve
    compatible ones together, ack only what was served; `serve` is the subclass's."""

    stream: str
    group: str
    message_cls: type[Task]
    kind: str

    def __init__(
        self,
        queue: Queue,
        *,
        worker_id: str,
        tasks_per_call: int = 1,
        claim_idle_s: float = 60.0,
        metrics: SamplerMetrics | None = None,
        backoff_s: float = 1.0,
        admission: Admission | None = None,
    ) -> None:
        self.queue = queue
        self.admission = admission or Admission()
        self.dead_lettered = 0
        self.worker_id = worker_id
        self.tasks_per_call = max(1, tasks_per_call)
        self.claim_idle_s = claim_idle_s
        self.metrics = metrics
        self.backoff_s = backoff_s
        self.tasks_reclaimed = 0
        self._last_reclaim = 0.0

    # one round ------------------------------------------------------------------------------

    def take(self, block_s: float) -> list[Entry]:
        """Reclaimed tasks (checked every half claim-idle period), else new ones."""
        now = time.monotonic()
        if now - self._last_reclaim >= self.claim_idle_s / 2:
            self._last_reclaim = now
            reclaimed = self.queue.reclaim(
                self.stream,
                self.group,
                self.worker_id,
                min_idle_s=self.claim_idle_s,
                count=self.tasks_per_call,
            )
            if reclaimed:
                self.tasks_reclaimed += len(reclaimed)
                if self.metrics is not None:
                    self.metrics.tasks_reclaimed.inc(len(reclaimed))
                log.info(f"reclaimed {self.kind} tasks", extra={"tasks": len(reclaimed)})
                return reclaimed
        return self.queue.get(self.stream, self.group, self.worker_id, self.tasks_per_call, block_s)

    def parse(self, entries: list[Entry]) -> list[tuple[Entry, Task]]:
        """The tasks of `entries`; undecodable entries are acked away and logged."""
        try:
            return read_messages(entries, self.message_cls)
        except UndecodablePayload as error:
            log.error(f"dropping undecodable {self.kind} tasks", extra={"error": str(error)})
            self.queue.ack(self.stream, self.group, [e.id for e in error.bad])
            return [(entry, message) for entry, message in error.good]

    def step(self, block_s: float = 0.5) -> int:
        """One round; returns the number of tasks acked."""
        tasks = self.admit(self.parse(self.take(block_s)))
        done = 0
        while tasks:
            batch = [tasks[0]]
            batch += [t for t in tasks[1:] if self.compatible(t[1], tasks[0][1])]
            tasks = [t for t in tasks if t not in batch]
            done += self.serve(batch)
        return done

    def admit(self, tasks: list[tuple[Entry, Task]]) -> list[tuple[Entry, Task]]:
        """The tasks worth serving; the others go to the dead letters: delivered more than
        `max_deliveries` times (a task that crashes or stalls every worker), or invalid."""
        kept = []
        for entry, task in tasks:
            reason = self.problem(task)
            if entry.deliveries > self.admission.max_deliveries:
                reason = f"delivered {entry.deliveries} times"
            if reason is None:
                kept.append((entry, task))
            else:
                self.dead_letter(entry, reason)
        return kept

    def problem(self, task: Task) -> str | None:
        """Why `task` cannot be served (None: it can); the subclass's checks."""
        return None

    def dead_letter(self, entry: Entry, reason: str) -> None:
        """Move one entry to the dead-letter stream, then ack it."""
        letter = data_pb2.DeadLetter(
            stream=self.stream,
            entry_id=entry.id,
            payload=entry.payload,
            deliveries=entry.deliveries,
            reason=reason,
            worker_id=self.worker_id,
        )
        put_message(self.queue, DEAD_LETTER_STREAM, letter)
        self.queue.ack(self.stream, self.group, [entry.id])
        self.dead_lettered += 1
        log.error(
            f"{self.kind} task moved to the dead letters",
            extra={"entry": entry.id, "stream": self.stream, "reason": reason},
        )
        if self.metrics is not None:
            self.metrics.dead_letters.labels(self.stream, reason.split()[0]).inc()

    def compatible(self, a: Task, b: Task) -> bool:
        """Whether two tasks can be served together."""
        raise NotImplementedError

    def serve(self, batch: Sequence[tuple[Entry, Task]]) -> int:
        """Serve compatible tasks; returns how many were acked."""
        raise NotImplementedError

    def acked(self, batch: Sequence[tuple[Entry, Task]]) -> int:
        """Ack a served batch; returns its size."""
        self.queue.ack(self.stream, self.group, [entry.id for entry, _ in batch])
        return len(batch)

    def failed(self, stage: str, batch: Sequence[tuple[Entry, Task]], run_id: str) -> int:
        """Leave the batch pending for a retry (after a back-off); returns 0."""
        log.exception(
            f"{self.kind} tasks failed; left pending for a retry",
            extra={"stage": stage, "tasks": len(batch), "run_id": run_id},
        )
        if self.metrics is not None:
            self.metrics.task_failures.labels(stage).inc()
        time.sleep(self.backoff_s)
        return 0

    # loop -----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve tasks until `stop` is set. Queue errors (Redis restarting) are retried."""
        while not stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception(f"{self.kind} round failed; retrying")
                stop.wait(self.backoff_s)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name=self.worker_id, daemon=True)
        thread.start()
        return thread


class SamplerWorker(TaskWorker[data_pb2.RolloutTask]):
    """GRPO rollout tasks in, graded groups out (see the module docstring)."""

    stream = PROMPTS_STREAM
    group = SAMPLERS_GROUP
    message_cls = data_pb2.RolloutTask
    kind = "rollout"

    def __init__(
        self,
        queue: Queue,
        generate: TaskGenerate,
        score: GroupScorer,
        *,
        worker_id: str,
        tasks_per_call: int = 1,
        claim_idle_s: float = 60.0,
        seed: int = 0,
        metrics: SamplerMetrics | None = None,
        backoff_s: float = 1.0,
        admission: Admission | None = None,
    ) -> None:
        super().__init__(
            queue,
            worker_id=worker_id,
            tasks_per_call=tasks_per_call,
            claim_idle_s=claim_idle_s,
            metrics=metrics,
            backoff_s=backoff_s,
            admission=admission,
        )
        self.generate = generate
        self.score = score
        self.seed = seed
        self.groups_pushed = 0

    def compatible(self, a: data_pb2.RolloutTask, b: data_pb2.RolloutTask) -> bool:
        return compatible(a, b)

    def problem(self, task: data_pb2.RolloutTask) -> str | None:
        if not (task.run_id and task.epoch and task.problem.task):
            return "invalid: a rollout task needs a run, an epoch and a problem"
        if task.n < 2:
            return "invalid: a GRPO group needs n ≥ 2"
        try:
            params = sampling_of(task)
        except InvalidMessage as error:
            return f"invalid: {error}"
        try:
            prompt = grpo_prompt(problem_from_proto(task.problem))
        except InvalidMessage as error:
            return f"invalid: {error}"
        return self.admission.refusal(params, [task.model_uri, task.weights_uri], [prompt])

    def serve(self, batch: Sequence[tuple[Entry, data_pb2.RolloutTask]]) -> int:
        """Sample, grade and queue the groups of compatible tasks, then ack them."""
        first = batch[0][1]
        problems = [problem_from_proto(task.problem) for _, task in batch]
        params = replace(sampling_of(first), seed=self.seed + int(first.prompt_index))
        started = time.perf_counter()
        try:
            outputs = self.generate(first, [grpo_prompt(p) for p in problems], params)
        except Exception:
            return self.failed("generate", batch, first.run_id)
        generated = time.perf_counter()
        try:
            rewards = self.score(list(zip(problems, outputs, strict=True)))
        except Exception:
            return self.failed("reward", batch, first.run_id)
        if self.metrics is not None:
            self.metrics.generate_seconds.observe(generated - started)
            self.metrics.reward_seconds.observe(time.perf_counter() - generated)
        for (_, task), problem, completions, values in zip(
            batch, problems, outputs, rewards, strict=True
        ):
            group = make_group(
                int(task.prompt_index),
                problem,
                completions,
                values,
                sampler_id=self.worker_id,
                epoch=task.epoch,
            )
            put_message(self.queue, GROUPS_STREAM, group_to_proto(group, task.run_id))
        self.groups_pushed += len(batch)
        if self.metrics is not None:
            self.metrics.groups_pushed.inc(len(batch))
        return self.acked(batch)
