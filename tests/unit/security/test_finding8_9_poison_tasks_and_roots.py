"""Issue 15, findings 8 and 9: rollout tasks are untrusted queue entries. A task naming a model or
weight store outside the service's roots, a task whose values are out of range (n = 1e9), a task
that is not a task at all, and a task delivered too often without being acked go to the
dead-letter stream (acked, counted, logged with the entry id) instead of crashing or looping; a
version whose files do not match the learner's checksum is never loaded (see
`tests/unit/rollout/test_sampler_worker.py::test_a_tampered_version_is_refused…`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from skillfactory.engines.base import Completion, SamplingParams
from skillfactory.models.registry import model_allowed
from skillfactory.queue import InProcessQueue, put_message, read_messages
from skillfactory.rollout.generation_worker import GenerationWorker
from skillfactory.rollout.pool import SamplerConfig, SamplerPool
from skillfactory.rollout.scoring import local_scorer
from skillfactory.rollout.streams import (
    DEAD_LETTER_STREAM,
    GENERATIONS_STREAM,
    GENERATORS_GROUP,
    GROUPS_STREAM,
    PROMPTS_STREAM,
    SAMPLERS_GROUP,
)
from skillfactory.rollout.worker import Admission, SamplerWorker
from skillfactory.runspec import RedisQueueSpec
from skillfactory.tasks import Problem
from skillfactory.v1 import data_pb2
from skillfactory.wire.messages import generation_task, problem_to_proto, sampling_to_proto


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: object) -> list[list[Completion]]:
        self.calls += 1
        prompts = args[1] if isinstance(args[0], data_pb2.RolloutTask) else args[1]
        n = args[2].n  # type: ignore[union-attr]
        return [[Completion("<answer>1</answer>", [1], [0.0], "stop", 0, [1])] * n for _ in prompts]  # type: ignore[arg-type]


def rollout_task(**fields: object) -> data_pb2.RolloutTask:
    problem = Problem("q", "multiplication-1", "What is 1 * 1?", "1", {"a": 1, "b": 1})
    task = data_pb2.RolloutTask(
        run_id="r",
        epoch="e",
        prompt_index=0,
        problem=problem_to_proto(problem),
        n=2,
        sampling=sampling_to_proto(SamplingParams(max_tokens=8)),
    )
    for name, value in fields.items():
        setattr(task, name, value)
    return task


def dead_letters(queue: InProcessQueue) -> list[data_pb2.DeadLetter]:
    entries = queue.get(DEAD_LETTER_STREAM, "operator", "o", 100, 0)
    return [m for _, m in read_messages(entries, data_pb2.DeadLetter)]


def sampler(queue: InProcessQueue, engine: Counting, roots: Sequence[Path] = ()) -> SamplerWorker:
    return SamplerWorker(
        queue,
        engine,
        local_scorer(),
        worker_id="w",
        tasks_per_call=8,
        backoff_s=0.0,
        admission=Admission(
            max_deliveries=3, model_allowed=model_allowed(roots) if roots else lambda uri: True
        ),
    )


def test_a_task_with_n_1e9_is_dead_lettered_not_retried_for_ever() -> None:
    queue, engine = InProcessQueue(), Counting()
    put_message(queue, PROMPTS_STREAM, rollout_task(n=10**9))
    assert sampler(queue, engine).step(block_s=0) == 0
    (letter,) = dead_letters(queue)
    assert letter.stream == PROMPTS_STREAM and letter.reason.startswith("invalid: n must be")
    assert queue.pending(PROMPTS_STREAM, SAMPLERS_GROUP) == 0 and engine.calls == 0


def test_an_empty_entry_is_not_a_task() -> None:
    queue, engine = InProcessQueue(), Counting()
    queue.put(PROMPTS_STREAM, b"")  # parses as an empty RolloutTask
    sampler(queue, engine).step(block_s=0)
    assert [letter.reason for letter in dead_letters(queue)] == [
        "invalid: a rollout task needs a run, an epoch and a problem"
    ]


def test_a_task_delivered_too_often_goes_to_the_dead_letters() -> None:
    queue, engine = InProcessQueue(), Counting()
    put_message(queue, PROMPTS_STREAM, rollout_task())
    for attempt in range(4):  # taken and never acked: a worker that crashes on it each time
        taken = queue.reclaim(PROMPTS_STREAM, SAMPLERS_GROUP, f"c{attempt}", 0.0, 10) or (
            queue.get(PROMPTS_STREAM, SAMPLERS_GROUP, f"c{attempt}", 10, 0)
        )
        assert taken
    worker = sampler(queue, engine)
    worker._last_reclaim = -1e9  # reclaim now
    worker.claim_idle_s = 0.0
    worker.step(block_s=0)
    (letter,) = dead_letters(queue)
    assert letter.reason.startswith("delivered") and letter.deliveries > 3
    assert queue.depth(GROUPS_STREAM, "learner") == 0


def test_a_task_naming_a_model_outside_the_roots_builds_nothing(tmp_path: Path) -> None:
    queue, engine = InProcessQueue(), Counting()
    put_message(queue, PROMPTS_STREAM, rollout_task(model_uri="/etc", weights_uri=""))
    put_message(
        queue,
        PROMPTS_STREAM,
        rollout_task(model_uri=str(tmp_path / "models" / "m"), prompt_index=1),
    )
    assert sampler(queue, engine, roots=[tmp_path / "models"]).step(block_s=0) == 1
    (letter,) = dead_letters(queue)  # reads (and so consumes) the dead letters so far
    assert "'/etc' is outside" in letter.reason
    generation = generation_task("r", "e", "t0", "/root/.ssh", "hi", SamplingParams(seed=1))
    put_message(queue, GENERATIONS_STREAM, generation)
    allowed = Admission(model_allowed=model_allowed([tmp_path]))
    worker = GenerationWorker(queue, engine, worker_id="g", backoff_s=0.0, admission=allowed)
    worker.step(block_s=0)
    assert queue.pending(GENERATIONS_STREAM, GENERATORS_GROUP) == 0
    (letter,) = dead_letters(queue)
    assert letter.stream == GENERATIONS_STREAM and "'/root/.ssh' is outside" in letter.reason
    assert engine.calls == 1  # only the task inside the roots was served


def test_the_delivery_threshold_is_the_service_s_configuration() -> None:
    """`serve rollout --max-deliveries N` reaches every worker's admission rules."""
    config = SamplerConfig(RedisQueueSpec(url="redis://127.0.0.1:1"), workers=2, max_deliveries=2)
    pool = SamplerPool(config, generate=lambda *a: [], score=lambda *a: [], generate_for=None)
    assert [w.admission.max_deliveries for w in pool.workers] == [2, 2]
