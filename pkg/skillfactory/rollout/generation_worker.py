"""Generation workers: stage 1's and eval's generation tasks in, completions out.

A worker (a thread of the rollout service) takes `GenerationTask`s from the `generations` stream
(consumer group `generators`; a dead worker's tasks reclaimed after `claim_idle_s`), serves the
compatible ones together — same model and sampling, each prompt with its own seed — through the
service's engine (`RolloutServicer.generate_for`: merged with the rest of the service's work),
puts one `GenerationResult` per task on the `generated` stream, and only then acks the tasks. A
worker killed between the two makes a reclaimed task answered twice; the learner keeps the first
answer of each task id. A task that fails (model missing, engine error) stays pending for a retry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from skillfactory.engines.base import Completion, Prompt, SamplingParams
from skillfactory.queue import Entry, Queue, put_messages
from skillfactory.rollout.streams import (
    GENERATED_STREAM,
    GENERATIONS_STREAM,
    GENERATORS_GROUP,
)
from skillfactory.rollout.worker import Admission, SamplerMetrics, TaskWorker
from skillfactory.v1 import data_pb2
from skillfactory.wire.messages import (
    InvalidMessage,
    generation_result,
    sampling_from_proto,
    task_prompt,
)

GenerateFor = Callable[
    [str, Sequence[Prompt], SamplingParams, Sequence[int]], list[list[Completion]]
]
"""Samples prompts on a model, prompt i with seed i (`RolloutServicer.generate_for`)."""


def compatible(a: data_pb2.GenerationTask, b: data_pb2.GenerationTask) -> bool:
    """Whether two tasks can share one engine call (their seeds aside)."""
    if (a.run_id, a.model_uri, a.n) != (b.run_id, b.model_uri, b.n):
        return False
    return replace(sampling_of(a), seed=None) == replace(sampling_of(b), seed=None)


def sampling_of(task: data_pb2.GenerationTask) -> SamplingParams:
    """How a task asks to sample (with its own seed)."""
    return sampling_from_proto(task.sampling, int(task.n))


class GenerationWorker(TaskWorker[data_pb2.GenerationTask]):
    """Stage-1 and eval generation tasks in, results out (see the module docstring)."""

    stream = GENERATIONS_STREAM
    group = GENERATORS_GROUP
    message_cls = data_pb2.GenerationTask
    kind = "generation"

    def __init__(
        self,
        queue: Queue,
        generate: GenerateFor,
        *,
        worker_id: str,
        tasks_per_call: int = 16,
        claim_idle_s: float = 60.0,
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
        self.results_pushed = 0

    def compatible(self, a: data_pb2.GenerationTask, b: data_pb2.GenerationTask) -> bool:
        return compatible(a, b)

    def problem(self, task: data_pb2.GenerationTask) -> str | None:
        if not (task.task_id and task.epoch and task.model_uri):
            return "invalid: a generation task needs an id, an epoch and a model"
        if not (task.messages or task.text):
            return "invalid: a generation task needs a prompt"
        try:
            params = sampling_of(task)
        except InvalidMessage as error:
            return f"invalid: {error}"
        return self.admission.refusal(params, [task.model_uri], [task_prompt(task)])

    def serve(self, batch: Sequence[tuple[Entry, data_pb2.GenerationTask]]) -> int:
        """Generate every task's completions in one request, queue the results, ack."""
        first = batch[0][1]
        tasks = [task for _, task in batch]
        try:
            params = replace(sampling_of(first), seed=None)
            seeds = [int(t.sampling.seed) if t.sampling.HasField("seed") else 0 for t in tasks]
            outputs = self.generate(first.model_uri, [task_prompt(t) for t in tasks], params, seeds)
        except Exception:
            return self.failed("generate", batch, first.run_id)
        results = [
            generation_result(task, completions, self.worker_id)
            for task, completions in zip(tasks, outputs, strict=True)
        ]
        put_messages(self.queue, GENERATED_STREAM, results)
        self.results_pushed += len(batch)
        return self.acked(batch)
