"""The reward service: batch scoring of responses with the task graders.

`Score` grades every item of a batch with `skillfactory.tasks.grade` and answers one `Reward` per
item, in order. An item that cannot be graded (no task, unknown task, a problem missing a field its
grader needs) gets `error` set and value 0; the batch never fails for it. Graders parse model text
with bounded, non-evaluating parsers: nothing a model writes is executed.

Series added to the server's registry:

- `skillfactory_reward_answers_graded_total{task}` — items graded (errors excluded);
- `skillfactory_reward_answers_correct_total{task}` — of which correct (reward mean = ratio);
- `skillfactory_reward_record_errors_total{reason}` — items answered with an error;
- `skillfactory_reward_batch_items` — histogram of items per request.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2
from prometheus_client import CollectorRegistry, Counter, Histogram

from skillfactory.serving.logs import bind_run_id
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.tasks import Problem, ProblemFieldError, Task, UnknownTaskError, get_task, grade
from skillfactory.v1 import data_pb2, reward_pb2, reward_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "skillfactory.v1.RewardService"
"""Fully qualified service name, as the health service reports it."""

RUN_ID_METADATA = "x-run-id"
"""Optional call metadata naming the run a batch belongs to (used in logs only)."""

BATCH_BUCKETS = (1, 8, 64, 256, 1000, 4000, 16000, 64000)


class RewardMetrics:
    """Reward-specific series in a server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.graded = Counter(
            "skillfactory_reward_answers_graded",
            "Answers graded, by task.",
            ("task",),
            registry=registry,
        )
        self.correct = Counter(
            "skillfactory_reward_answers_correct",
            "Answers graded correct, by task.",
            ("task",),
            registry=registry,
        )
        self.errors = Counter(
            "skillfactory_reward_record_errors",
            "Items answered with a per-record error instead of a grade, by reason.",
            ("reason",),
            registry=registry,
        )
        self.batch_items = Histogram(
            "skillfactory_reward_batch_items",
            "Items per Score request.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )


@dataclass
class BatchTally:
    """Counts of one batch, added to the metrics once per request rather than once per item."""

    graded: Tally[str]
    correct: Tally[str]
    errors: Tally[str]

    @classmethod
    def empty(cls) -> BatchTally:
        return cls(Tally(), Tally(), Tally())


class RecordError(ValueError):
    """An item that cannot be graded; `reason` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def problem_from_proto(message: data_pb2.Problem) -> Problem:
    """The library's problem from its protobuf form; Struct numbers that are integral become ints."""
    data = {key: _plain(value) for key, value in message.data.items()}
    return Problem(message.id, message.task, message.question, message.answer, data)


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, struct_pb2.Struct):
        return {key: _plain(inner) for key, inner in value.items()}
    if isinstance(value, struct_pb2.ListValue):
        return [_plain(inner) for inner in value]
    return value


def _task_of(name: str) -> Task:
    if not name:
        raise RecordError("missing_field", "problem has no task")
    try:
        return get_task(name)
    except UnknownTaskError as error:
        raise RecordError("unknown_task", str(error)) from None


def score_item(item: reward_pb2.ScoreItem, tally: BatchTally) -> data_pb2.Reward:
    """The reward of one item; never raises."""
    try:
        task = _task_of(item.problem.task)
        result = grade(task, problem_from_proto(item.problem), item.response)
    except RecordError as error:
        tally.errors[error.reason] += 1
        return data_pb2.Reward(value=0.0, correct=False, error=str(error))
    except ProblemFieldError as error:
        tally.errors["missing_field"] += 1
        return data_pb2.Reward(value=0.0, correct=False, error=f"problem {error}")
    except Exception as error:  # a grader bug must cost one record, not the batch
        log.exception("grader failed", extra={"task": item.problem.task})
        tally.errors["grader_error"] += 1
        return data_pb2.Reward(
            value=0.0, correct=False, error=f"grader failed: {type(error).__name__}"
        )
    tally.graded[task.name] += 1
    tally.correct[task.name] += result.correct
    reward = data_pb2.Reward(value=1.0 if result.correct else 0.0, correct=result.correct)
    if result.answer is not None:
        reward.answer = result.answer
    return reward


def score(
    request: reward_pb2.ScoreRequest, metrics: RewardMetrics | None = None
) -> reward_pb2.ScoreResponse:
    """One reward per item of `request`, in order."""
    tally = BatchTally.empty()
    response = reward_pb2.ScoreResponse()
    response.rewards.extend(score_item(item, tally) for item in request.items)
    if metrics is not None:
        _record(metrics, tally, len(request.items))
    errors = sum(tally.errors.values())
    if errors:
        log.info("batch with record errors", extra={"items": len(request.items), "errors": errors})
    return response


def _record(metrics: RewardMetrics, tally: BatchTally, items: int) -> None:
    metrics.batch_items.observe(items)
    for task, count in tally.graded.items():
        metrics.graded.labels(task).inc(count)
        metrics.correct.labels(task).inc(tally.correct[task])
    for reason, count in tally.errors.items():
        metrics.errors.labels(reason).inc(count)


class RewardServicer(reward_pb2_grpc.RewardServiceServicer):
    """`RewardService` over the task graders."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.metrics = RewardMetrics(registry) if registry is not None else None

    def Score(  # noqa: N802 (the RPC's name)
        self, request: reward_pb2.ScoreRequest, context: grpc.ServicerContext
    ) -> reward_pb2.ScoreResponse:
        run_id = dict(context.invocation_metadata() or ()).get(RUN_ID_METADATA)
        with bind_run_id(str(run_id) if run_id else None):
            return score(request, self.metrics)

    def add_to(self, server: grpc.Server) -> None:
        reward_pb2_grpc.add_RewardServiceServicer_to_server(self, server)


def setup_reward_server(config: ServingConfig) -> ServiceServer:
    """A reward server (not started yet) with its servicer and metrics."""
    server = ServiceServer("reward", config)
    servicer = RewardServicer(server.metrics.registry)
    server.add_service(SERVICE_NAME, servicer.add_to)
    return server
