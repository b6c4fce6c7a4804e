"""The learner's engine in the distributed mode: every generate call runs on the rollout fleet.

`RemoteEngine` implements `Engine` for stage 1 and eval (budget forcing included) without a model
in the learner's process: a call of P prompts becomes P `GenerationTask`s on the `generations`
stream — prompt i with its own seed, `params.seed + i` (`prompt_seeds`) — which the rollout
services' generation workers take, generate (merged with whatever else they are serving) and
answer on the `generated` stream. The call returns when every task has its result, in prompt
order, so stage 1 and eval are unchanged: with an engine whose output is a function of prompt and
seed, the distributed run writes the files the embedded one writes.

- Task ids are `<epoch>/<call>/<i>`; results of another epoch (a learner that died) or of a task
  already answered (a reclaimed task served twice) are acked away and ignored. A task's worker
  acks it only after its result is queued, and a dead worker's tasks are reclaimed by another, so
  no prompt is lost; the learner persists what a call returned (stage 1 chunk by chunk, eval task
  by task), and a restarted learner asks again for what it had not persisted.
- A call that gets no result for `stall_timeout_s` raises `GenerationStalled` naming the stream
  (no rollout service serving it, or every one failing); `stop` ends a wait early (cancel).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace

from skillfactory.engines.base import Completion, Prompt, SamplingParams, Weights, prompt_seeds
from skillfactory.queue import Entry, Queue, UndecodablePayload, put_messages, read_messages
from skillfactory.rollout.streams import (
    DEAD_LETTER_STREAM,
    GENERATED_STREAM,
    GENERATIONS_STREAM,
    ORCHESTRATOR_GROUP,
)
from skillfactory.v1 import data_pb2
from skillfactory.wire.messages import completion_from_proto, generation_task

log = logging.getLogger(__name__)


class GenerationStalled(RuntimeError):
    """A generate call waited too long without any result."""


class GenerationStopped(RuntimeError):
    """A generate call was stopped while waiting (the run was cancelled or the learner stops)."""


def new_epoch() -> str:
    """A fresh orchestrator epoch id."""
    return uuid.uuid4().hex[:12]


class RemoteEngine:
    """An `Engine` whose calls are generation tasks served by the rollout services."""

    def __init__(
        self,
        queue: Queue,
        model_uri: str,
        *,
        run_id: str = "",
        epoch: str | None = None,
        stall_timeout_s: float = 600.0,
        poll_s: float = 0.5,
        stop: Callable[[], bool] | None = None,
        owns_queue: bool = False,
    ) -> None:
        self.queue = queue
        self.owns_queue = owns_queue
        self.model_uri = model_uri
        self.run_id = run_id
        self.epoch = epoch or new_epoch()
        self.stall_timeout_s = stall_timeout_s
        self.poll_s = poll_s
        self.stop = stop or (lambda: False)
        self._calls = itertools.count()
        self._lock = threading.Lock()
        self.tasks_sent = 0
        self.duplicates = 0
        self.tokens_received = 0

    @property
    def policy_version(self) -> int:
        return 0

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        """`params.n` completions of every prompt, generated on the rollout fleet."""
        if not prompts:
            return []
        seeds = seeds if seeds is not None else prompt_seeds(params, len(prompts))
        with self._lock:  # one call at a time reads the results stream
            call = f"{self.epoch}/{next(self._calls)}"
            ids = self._send(call, prompts, params, seeds)
            answers = self._collect(ids)
        return [answers[task_id] for task_id in ids]

    def _send(
        self,
        call: str,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        seeds: Sequence[int] | None,
    ) -> list[str]:
        ids = [f"{call}/{index}" for index in range(len(prompts))]
        messages = [
            generation_task(
                self.run_id,
                self.epoch,
                task_id,
                self.model_uri,
                prompt,
                params if seeds is None else replace(params, seed=seeds[index]),
            )
            for index, (task_id, prompt) in enumerate(zip(ids, prompts, strict=True))
        ]
        put_messages(self.queue, GENERATIONS_STREAM, messages)
        self.tasks_sent += len(ids)
        return ids

    def _collect(self, ids: list[str]) -> dict[str, list[Completion]]:
        wanted = set(ids)
        answers: dict[str, list[Completion]] = {}
        last_progress = time.monotonic()
        while len(answers) < len(wanted):
            if self.stop():
                raise GenerationStopped("stopped while waiting for generation results")
            entries = self.queue.get(
                GENERATED_STREAM, ORCHESTRATOR_GROUP, f"learner-{self.epoch}", 256, self.poll_s
            )
            for task_id, completions in self._decode(entries):
                if task_id in wanted and task_id not in answers:
                    answers[task_id] = completions
                    self.tokens_received += sum(len(c.token_ids) for c in completions)
                    last_progress = time.monotonic()
                else:
                    self.duplicates += 1
            if entries:
                self.queue.ack(GENERATED_STREAM, ORCHESTRATOR_GROUP, [e.id for e in entries])
            if time.monotonic() - last_progress > self.stall_timeout_s:
                raise GenerationStalled(
                    f"no generation result for {self.stall_timeout_s:.0f} s "
                    f"({len(answers)}/{len(wanted)} answered): is a rollout service serving "
                    f"the {GENERATIONS_STREAM!r} stream with model {self.model_uri!r}, and "
                    f"are the tasks within its limits (see the {DEAD_LETTER_STREAM!r} stream)?"
                )
        return answers

    def _decode(self, entries: list[Entry]) -> list[tuple[str, list[Completion]]]:
        try:
            messages = read_messages(entries, data_pb2.GenerationResult)
        except UndecodablePayload as error:
            log.error("dropping undecodable generation results", extra={"entries": len(error.bad)})
            messages = error.good
        return [
            (m.task_id, [completion_from_proto(c) for c in m.completions])
            for _, m in messages
            if m.epoch == self.epoch
        ]

    def load_weights(self, weights: Weights, version: int) -> None:
        raise NotImplementedError("a remote engine samples the models on the shared store")

    def close(self) -> None:
        """Close the queue when this engine opened it."""
        if self.owns_queue:
            self.queue.close()
