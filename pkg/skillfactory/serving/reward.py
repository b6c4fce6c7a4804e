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
    data = {key: _plain(value) for key, value in message.data.fields.items()}
    return Problem(message.id, message.task, message.question, message.answer, data)


def _plain(value: struct_pb2.Value) -> Any:
    """A Struct value as plain Python (read field by field: the Struct mapping helpers are slow)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() else number
    if kind == "string_value":
        return value.string_value
    if kind == "list_value":
        return [_plain(inner) for inner in value.list_value.values]
    if kind == "struct_value":
        return {key: _plain(inner) for key, inner in value.struct_value.fields.items()}
    if kind == "bool_value":
        return value.bool_value
    return None


def _task_of(name: str) -> Task:
    if not name:
        raise RecordError("missing_field", "problem has no task")
    try:
        return get_task(name)
    except UnknownTaskError as error:
        raise RecordError("unknown_task", str(error)) from None


class ProblemCache:
    """Problems of one batch by their serialized form: a batch usually holds a whole group (G
    responses to one problem), and reading a Struct costs more than grading an answer."""

    def __init__(self) -> None:
        self._problems: dict[bytes, Problem] = {}

    def get(self, message: data_pb2.Problem) -> Problem:
        key = message.SerializeToString()  # equal bytes ⇒ equal problems (a miss only costs time)
        problem = self._problems.get(key)
        if problem is None:
            problem = self._problems[key] = problem_from_proto(message)
        return problem


def score_item(
    item: reward_pb2.ScoreItem,
    tally: BatchTally,
    problems: ProblemCache | None = None,
    reward: data_pb2.Reward | None = None,
) -> data_pb2.Reward:
    """The reward of one item (filled into `reward` when given); never raises."""
    if reward is None:
        reward = data_pb2.Reward()
    message = item.problem
    try:
        task = _task_of(message.task)
        problem = problems.get(message) if problems is not None else problem_from_proto(message)
        result = grade(task, problem, item.response)
    except RecordError as error:
        tally.errors[error.reason] += 1
        reward.error = str(error)
    except ProblemFieldError as error:
        tally.errors["missing_field"] += 1
        reward.error = f"problem {error}"
    except Exception as error:  # a grader bug must cost one record, not the batch
        log.exception("grader failed", extra={"task": message.task})
        tally.errors["grader_error"] += 1
        reward.error = f"grader failed: {type(error).__name__}"
    else:
        tally.graded[task.name] += 1
        if result.correct:
            tally.correct[task.name] += 1
            reward.value, reward.correct = 1.0, True
        if result.answer is not None:
            reward.answer = result.answer
    return reward


def score(
    request: reward_pb2.ScoreRequest, metrics: RewardMetrics | None = None
) -> reward_pb2.ScoreResponse:
    """One reward per item of `request`, in order."""
    tally = BatchTally.empty()
    problems = ProblemCache()
    response = reward_pb2.ScoreResponse()
    add_reward = response.rewards.add
    for item in request.items:
        score_item(item, tally, problems, add_reward())
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
