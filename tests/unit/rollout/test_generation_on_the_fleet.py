"""Stage 1 and eval generation on the rollout fleet, in one process: the learner's remote engine
puts one task per prompt on an in-process queue, generation workers of two "replicas" (each a
rollout servicer with its own engine thread) serve them, and the answers come back in order.

With the seeded text engine (output a function of prompt and seed) a remote call equals the
embedded call, whoever served which task, and stage 1 writes the same files; a worker that dies
with tasks in hand loses none (another reclaims them, duplicates are dropped); concurrent work
is merged into large engine calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from skillfactory.engines.base import Completion, Prompt, SamplingParams
from skillfactory.engines.simulated import SeededTextEngine
from skillfactory.queue import InProcessQueue
from skillfactory.rollout.batcher import EngineBatcher
from skillfactory.rollout.engine_slot import EngineSlot
from skillfactory.rollout.generation_worker import GenerationWorker
from skillfactory.rollout.remote_engine import RemoteEngine
from skillfactory.rollout.streams import GENERATED_STREAM, GENERATIONS_STREAM, GENERATORS_GROUP
from skillfactory.runspec import parse_run_spec
from skillfactory.serving.rollout import RolloutServicer
from skillfactory.stages.data import SAMPLES_FILE, SFT_FILE, Stage1, data_dir

PROMPTS: list[Prompt] = [
    [{"role": "user", "content": f"Question {i}: pick a letter."}] for i in range(7)
] + ["raw text prompt"]


class Fleet:
    """`replicas` rollout servicers (seeded text engines), each with `workers` generation
    workers on the shared queue, running until `stop`."""

    def __init__(self, queue: InProcessQueue, replicas: int = 2, workers: int = 2) -> None:
        self.servicers = [
            RolloutServicer(SeededTextEngine(), model="m", max_batch_size=64)
            for _ in range(replicas)
        ]
        self.workers = [
            GenerationWorker(
                queue,
                servicer.generate_for,
                worker_id=f"r{r}-g{w}",
                tasks_per_call=3,
                claim_idle_s=0.5,
                backoff_s=0.0,
            )
            for r, servicer in enumerate(self.servicers)
            for w in range(workers)
        ]
        self.stop = threading.Event()
        self.threads = [worker.start(self.stop) for worker in self.workers]

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        for servicer in self.servicers:
            servicer.close()


@pytest.fixture
def fleet_queue() -> Iterator[tuple[InProcessQueue, Fleet]]:
    queue = InProcessQueue()
    fleet = Fleet(queue)
    yield queue, fleet
    fleet.close()


def test_a_remote_call_equals_the_embedded_call_whoever_serves_each_prompt(
    fleet_queue: tuple[InProcessQueue, Fleet],
) -> None:
    queue, fleet = fleet_queue
    params = SamplingParams(n=3, temperature=0.7, max_tokens=64, seed=11)
    remote = RemoteEngine(queue, "m", run_id="run", stall_timeout_s=30)
    got = remote.generate(PROMPTS, params)
    want = SeededTextEngine().generate(PROMPTS, params)
    assert [[c.text for c in group] for group in got] == [[c.text for c in group] for group in want]
    assert remote.tasks_sent == len(PROMPTS)
    assert sum(w.results_pushed for w in fleet.workers) == len(PROMPTS)  # each task once
    assert queue.pending(GENERATIONS_STREAM, GENERATORS_GROUP) == 0


def test_stage1_on_the_fleet_writes_the_embedded_files(
    fleet_queue: tuple[InProcessQueue, Fleet], tmp_path: Path
) -> None:
    queue, _ = fleet_queue
    spec = parse_run_spec(
        {
            "name": "fleet",
            "model": "m",
            "output_dir": str(tmp_path / "remote"),
            "engine": {"type": "simulated"},
            "data": {
                "task": "csqa",
                "num_problems": 6,
                "samples_per_variant": 2,
                "reflections_per_sample": 2,
                "sampling": {"max_tokens": 64},
                "reflection_sampling": {"max_tokens": 64},
            },
        }
    )
    local = spec.model_copy(update={"output_dir": str(tmp_path / "local")})
    Stage1(local, SeededTextEngine(), max_batch_rows=16).run()
    remote = RemoteEngine(queue, "m", run_id="fleet", stall_timeout_s=30)
    Stage1(spec, remote, max_batch_rows=16).run()
    for name in (SAMPLES_FILE, SFT_FILE):
        assert (data_dir(spec) / name).read_text() == (data_dir(local) / name).read_text(), name
    assert (data_dir(spec) / SFT_FILE).read_text().strip(), "the run composed traces"
    records = (data_dir(spec) / SAMPLES_FILE).read_text().splitlines()
    assert len(records) == 6


class Hoarder(GenerationWorker):
    """Takes tasks and dies without serving or acking them (a killed rollout service)."""

    def serve(self, batch: Sequence[tuple[object, object]]) -> int:  # type: ignore[override]
        return 0


def test_tasks_of_a_dead_worker_are_reclaimed_and_answered_once() -> None:
    queue = InProcessQueue()
    dead = Hoarder(queue, lambda *a: [], worker_id="dead", tasks_per_call=100, claim_idle_s=0.5)
    params = SamplingParams(n=2, max_tokens=32, seed=3)
    remote = RemoteEngine(queue, "m", run_id="r", stall_timeout_s=30)
    result: list[list[list[Completion]]] = []
    caller = threading.Thread(target=lambda: result.append(remote.generate(PROMPTS, params)))
    caller.start()
    deadline = time.monotonic() + 5
    while dead.step(block_s=0.1) == 0 and queue.pending(GENERATIONS_STREAM, GENERATORS_GROUP) < len(
        PROMPTS
    ):
        assert time.monotonic() < deadline
    assert queue.pending(GENERATIONS_STREAM, GENERATORS_GROUP) == len(PROMPTS)
    fleet = Fleet(queue, replicas=1, workers=1)
    try:
        caller.join(30)
        assert result, "the call completed"
        assert fleet.workers[0].tasks_reclaimed == len(PROMPTS)
        want = SeededTextEngine().generate(PROMPTS, params)
        assert [[c.text for c in g] for g in result[0]] == [[c.text for c in g] for g in want]
        # a second answer to the same task (served twice) is dropped by the engine
        assert queue.pending(GENERATIONS_STREAM, GENERATORS_GROUP) == 0
        assert queue.depth(GENERATED_STREAM, "orchestrator") == 0
    finally:
        fleet.close()


class CountingEngine(SeededTextEngine):
    """Records the rows of every engine call; each call lasts a while (a busy GPU)."""

    def __init__(self) -> None:
        super().__init__(seconds_per_token=0.0)
        self.rows: list[int] = []

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        self.rows.append(len(prompts) * params.n)
        time.sleep(0.05)
        return super().generate(prompts, params, seeds)


def mean_rows_per_call(callers: int, requests_each: int = 12) -> float:
    engine = CountingEngine()
    batcher = EngineBatcher(EngineSlot(None, engine), max_rows=256)
    params = SamplingParams(n=4, max_tokens=16)

    def call(index: int) -> None:
        for round_ in range(requests_each):
            batcher.submit([f"prompt {index}-{round_}"], params, [index * 100 + round_])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    batcher.close()
    assert sum(engine.rows) == callers * requests_each * 4
    return sum(engine.rows) / len(engine.rows)


def test_concurrent_work_is_merged_into_large_engine_calls() -> None:
    one = mean_rows_per_call(1)
    four = mean_rows_per_call(4)
    assert one == 4.0
    assert four >= 3 * one, (one, four)


def test_merged_work_keeps_each_prompts_seed() -> None:
    """A merged call answers every work as the engine answers it alone."""
    engine = SeededTextEngine()
    batcher = EngineBatcher(EngineSlot(None, engine), max_rows=256)
    params = SamplingParams(n=2, max_tokens=32)
    alone = [engine.generate([p], params, [s]) for s, p in enumerate(PROMPTS)]
    results: dict[int, list[list[Completion]]] = {}
    threads = [
        threading.Thread(
            target=lambda s=s, p=p: results.__setitem__(s, batcher.submit([p], params, [s]))
        )
        for s, p in enumerate(PROMPTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    batcher.close()
    for s, want in enumerate(alone):
        assert [c.text for c in results[s][0]] == [c.text for c in want[0]]
