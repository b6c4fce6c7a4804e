"""Sampler workers and the learner's prompt feeder over the in-process queue (same semantics as
Redis Streams): tasks in, graded groups out, ack only after the group is queued, reclaim of a
dead worker's tasks, and the engine slot's per-epoch rebuild and weight catch-up."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from skillfactory.engines.base import Completion, Prompt, SamplingParams, Weights
from skillfactory.engines.simulated import TokenDelayEngine
from skillfactory.group import Group
from skillfactory.queue import InProcessQueue, read_messages
from skillfactory.rollout.engine_slot import EngineSlot, NoModelLoaded
from skillfactory.rollout.feeder import PromptFeeder, task_template
from skillfactory.rollout.sampler import PromptStream
from skillfactory.rollout.scoring import local_scorer
from skillfactory.rollout.streams import GROUPS_STREAM, PROMPTS_STREAM, SAMPLERS_GROUP
from skillfactory.rollout.worker import SamplerWorker
from skillfactory.tasks import Problem
from skillfactory.train.staleness import AdmissionController
from skillfactory.v1 import data_pb2
from skillfactory.wire.messages import group_from_proto
from skillfactory.wire.weight_store import CHECKSUM_FILE, WEIGHTS_FILE, WeightStore


class EchoEngine:
    """Answers every prompt with `<answer>N</answer>` for N = 0, 1, …; one token per completion."""

    def __init__(self, model: str = "m") -> None:
        self.model = model
        self.version = 0
        self.loaded: list[tuple[str, int]] = []
        self.closed = False

    @property
    def policy_version(self) -> int:
        return self.version

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        return [
            [
                Completion(f"<answer>{i}</answer>", [i], [-0.5], "stop", self.version, [1, 2, 3])
                for i in range(params.n)
            ]
            for _ in prompts
        ]

    def load_weights(self, weights: Weights, version: int) -> None:
        self.loaded.append((str(weights), version))
        self.version = version

    def close(self) -> None:
        self.closed = True


def problems(count: int) -> list[Problem]:
    return [
        Problem(f"q{i}", "multiplication-1", f"What is 1 * {i}?", str(i), {"a": 1, "b": i})
        for i in range(count)
    ]


def feed(queue: InProcessQueue, count: int, epoch: str = "e1", n: int = 3) -> PromptFeeder:
    """Put `count` rollout tasks on the queue through a real feeder under admission control."""
    admission = AdmissionController(count, max_staleness=0, limit=count)
    template = task_template("run", epoch, SamplingParams(n=n), model_uri="m", weights_uri="")
    feeder = PromptFeeder(queue, PromptStream(problems(count)), admission, template, batch=count)
    stop = threading.Event()
    thread = feeder.start(stop)
    deadline = time.monotonic() + 5
    while feeder.tasks_sent < count and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    admission.close()
    thread.join(5)
    assert feeder.error is None
    return feeder


def worker(
    queue: InProcessQueue, name: str, score=None, claim_idle_s: float = 60.0
) -> SamplerWorker:  # type: ignore[no-untyped-def]
    engine = EchoEngine()

    def generate(
        task: data_pb2.RolloutTask, prompts: Sequence[Prompt], params: SamplingParams
    ) -> list[list[Completion]]:
        return engine.generate(prompts, params)

    return SamplerWorker(
        queue,
        generate,
        score or local_scorer(),
        worker_id=name,
        tasks_per_call=4,
        claim_idle_s=claim_idle_s,
        backoff_s=0.0,
    )


def groups_of(queue: InProcessQueue) -> list[Group]:
    entries = queue.get(GROUPS_STREAM, "learner", "l", 100, 0)
    return [group_from_proto(message) for _, message in read_messages(entries, data_pb2.Group)]


def test_a_worker_turns_tasks_into_graded_groups_and_acks_them_after() -> None:
    queue = InProcessQueue()
    feed(queue, 4)
    assert worker(queue, "w0").step(block_s=0) == 4
    groups = groups_of(queue)
    assert sorted(g.prompt_index for g in groups) == [0, 1, 2, 3]
    for group in groups:
        assert group.epoch == "e1" and group.group_id == f"p{group.prompt_index}"
        assert len(group.completions) == 3
        # the prompt asks 1 * i: only the completion answering i is right
        expected = [1.0 if str(i) == group.problem.answer else 0.0 for i in range(3)]
        assert group.rewards == expected
    assert queue.pending(PROMPTS_STREAM, SAMPLERS_GROUP) == 0


def test_a_task_whose_grading_fails_stays_pending_and_another_worker_reclaims_it() -> None:
    queue = InProcessQueue()
    feed(queue, 2)

    def broken(groups: object) -> list[list[float]]:
        raise ConnectionError("reward service down")

    assert worker(queue, "w0", broken).step(block_s=0) == 0
    assert groups_of(queue) == []
    assert queue.pending(PROMPTS_STREAM, SAMPLERS_GROUP) == 2

    rescuer = worker(queue, "w1", claim_idle_s=0.05)
    time.sleep(0.06)
    assert rescuer.step(block_s=0) == 2
    assert rescuer.tasks_reclaimed == 2
    assert sorted(g.prompt_index for g in groups_of(queue)) == [0, 1]
    assert queue.pending(PROMPTS_STREAM, SAMPLERS_GROUP) == 0


def test_undecodable_tasks_are_acked_away_and_the_rest_served() -> None:
    queue = InProcessQueue()
    queue.put(PROMPTS_STREAM, b"\xff\xff not a task")
    feed(queue, 1)
    assert worker(queue, "w0").step(block_s=0) == 1
    assert len(groups_of(queue)) == 1
    assert queue.pending(PROMPTS_STREAM, SAMPLERS_GROUP) == 0


def test_the_engine_slot_rebuilds_per_epoch_and_catches_up_to_the_newest_weights(
    tmp_path: Path,
) -> None:
    import torch

    built: list[EchoEngine] = []

    def factory(model: str) -> EchoEngine:
        built.append(EchoEngine(model))
        return built[-1]

    slot = EngineSlot(factory)
    with pytest.raises(NoModelLoaded):
        slot.engine  # noqa: B018 (the property raises)
    store = WeightStore(tmp_path / "run" / "e1")
    assert slot.prepare("m", "e1", str(store.root)).policy_version == 0
    store.publish({"w": torch.zeros(2)}, 1)
    store.publish({"w": torch.ones(2)}, 2)
    engine = slot.prepare("m", "e1", str(store.root))
    assert engine is built[0] and engine.loaded == [(str(store.folder(2)), 2)]
    assert slot.prepare("m", "e1", str(store.root)) is built[0]  # nothing newer: no reload
    assert len(built[0].loaded) == 1

    other = WeightStore(tmp_path / "run" / "e2")  # a restarted learner: versions start over
    fresh = slot.prepare("m", "e2", str(other.root))
    assert fresh is built[1] and fresh.policy_version == 0 and built[0].closed


def test_a_tampered_version_is_refused_and_the_engine_keeps_the_one_it_has(
    tmp_path: Path,
) -> None:
    """The slot checks the checksum the learner wrote beside a version before loading it."""
    import torch

    engine = EchoEngine()
    slot = EngineSlot(lambda model: engine)
    store = WeightStore(tmp_path / "run" / "e1")
    store.publish({"w": torch.zeros(2)}, 1)
    assert slot.prepare("m", "e1", str(store.root)).policy_version == 1
    store.publish({"w": torch.ones(2)}, 2)
    weights = store.folder(2) / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    assert slot.prepare("m", "e1", str(store.root)).policy_version == 1
    assert engine.loaded == [(str(store.folder(1)), 1)]
    (store.folder(2) / CHECKSUM_FILE).unlink()  # no checksum at all: refused too
    assert slot.prepare("m", "e1", str(store.root)).policy_version == 1


def test_the_simulated_engine_lasts_its_delay_per_decode_step() -> None:
    engine = TokenDelayEngine(EchoEngine(), seconds_per_token=0.05)
    started = time.perf_counter()
    engine.generate(["a", "b"], SamplingParams(n=2))
    assert time.perf_counter() - started >= 0.05  # each completion is one token long
    with pytest.raises(ValueError):
        TokenDelayEngine(EchoEngine(), -1)


def test_an_ungradable_problem_scores_zero_instead_of_blocking_its_task() -> None:
    score = local_scorer()
    broken = Problem("q", "multiplication-1", "What is it?", "1", {})  # no factors
    unknown = Problem("q", "no-such-task", "?", "1")
    completion = Completion("<answer>1</answer>", [1], [0.0], "stop", 0)
    assert score([(broken, [completion]), (unknown, [completion])]) == [[0.0], [0.0]]
