"""The reward service: batch scoring of responses with the task graders.

A `Score` request holds items (a response with its problem) and groups (responses to one problem,
as GRPO samples them: the problem is sent, and read, once for the group; `score_request` builds
such a request). Every response is graded with `skillfactory.tasks.grade`; the answer holds one
`Reward` per record: the items in order, then each group's responses in order. A record that
cannot be graded (no task, unknown task, a problem missing a field its grader needs) gets `error`
set and value 0, and a group whose problem cannot be read gets it for each response; the batch
never fails for it. Graders parse model text with bounded, non-evaluating parsers: nothing a
model writes is executed.

Series added to the server's registry:

- `skillfactory_reward_answers_graded_total{task}` — records graded (errors excluded);
- `skillfactory_reward_answers_correct_total{task}` — of which correct (reward mean = ratio);
- `skillfactory_reward_record_errors_total{reason}` — records answered with an error;
- `skillfactory_reward_batch_items` — histogram of records (items and group responses) per request;
- `skillfactory_reward_grader_timeouts_total{task}` — answers graded wrong because their check was
  stopped (past its time budget, or its worker process died): the process-wide count of
  `skillfactory.tasks.bounded_check`.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from skillfactory.serving.logs import bind_run_id
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.tasks import (
    Problem,
    ProblemFieldError,
    Task,
    UnknownTaskError,
    get_task,
    grade,
)
from skillfactory.tasks.bounded_check import stopped_checks
from skillfactory.v1 import data_pb2, reward_pb2, reward_pb2_grpc
from skillfactory.wire.messages import problem_from_proto

log = logging.getLogger(__name__)

SERVICE_NAME = "skillfactory.v1.RewardService"
"""Fully qualified service name, as the health service reports it."""

RUN_ID_METADATA = "x-run-id"
"""Optional call metadata naming the run a batch belongs to (used in logs only)."""

BATCH_BUCKETS = (1, 8, 64, 256, 1000, 4000, 16000, 64000)


class GraderTimeouts(Collector):
    """Stopped checks per task, read from the graders' process-wide tally at each scrape."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "skillfactory_reward_grader_timeouts",
            "Answers graded wrong because their check was stopped (time budget, worker died).",
            labels=("task",),
        )
        for task, count in sorted(stopped_checks().items()):
            family.add_metric((task,), count)
        yield family


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
        registry.register(GraderTimeouts())


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


def _task_of(name: str) -> Task:
    if not name:
        raise RecordError("missing_field", "problem has no task")
    try:
        return get_task(name)
    except UnknownTaskError as error:
        raise RecordError("unknown_task", str(error)) from None


class ProblemCache:
    """Problems of one batch's items by their serialized form: items sent one by one may still hold
    whole groups (G responses to one problem), and reading a Struct costs more than grading an
    answer."""

    def __init__(self) -> None:
        self._problems: dict[bytes, Problem] = {}

    def get(self, message: data_pb2.Problem) -> Problem:
        key = message.SerializeToString()  # equal bytes ⇒ equal problems (a miss only costs time)
        problem = self._problems.get(key)
        if problem is None:
            problem = self._problems[key] = problem_from_proto(message)
        return problem


def _error_of(error: Exception, task: str) -> tuple[str, str]:
    """The metric reason and the record's error message of a record that cannot be graded."""
    if isinstance(error, RecordError):
        return error.reason, str(error)
    if isinstance(error, ProblemFieldError):
        return "missing_field", f"problem {error}"
    # A grader bug (or an unreadable problem) must cost its records, not the batch.
    log.error("grader failed", exc_info=error, extra={"task": task})
    return "grader_error", f"grader failed: {type(error).__name__}"


class _Batch:
    """The response of one request, built record by record, and its counts."""

    def __init__(self) -> None:
        self.response = reward_pb2.ScoreResponse()
        self.tally = BatchTally.empty()
        self.graded: list[str] = []  # task names, counted once at the end (cheaper than per item)
        self.correct: list[str] = []

    def fail(self, error: Exception, task: str, records: int = 1) -> None:
        """Answers `records` records with the error."""
        reason, message = _error_of(error, task)
        self.tally.errors[reason] += records
        add_reward = self.response.rewards.add
        for _ in range(records):
            add_reward(error=message)

    def items(self, items: Iterable[reward_pb2.ScoreItem]) -> None:
        problems = ProblemCache()
        graded, correct = self.graded, self.correct
        add_reward = self.response.rewards.add
        for item in items:
            message = item.problem
            try:
                task = _task_of(message.task)
                result = grade(task, problems.get(message), item.response)
            except Exception as error:
                self.fail(error, message.task)
                continue
            reward = add_reward()
            graded.append(task.name)
            if result.correct:
                correct.append(task.name)
                reward.value, reward.correct = 1.0, True
            if result.answer is not None:
                reward.answer = result.answer

    def group(self, group: reward_pb2.ScoreGroup) -> None:
        message = group.problem
        try:
            task, problem = _task_of(message.task), problem_from_proto(message)
        except Exception as error:
            self.fail(error, message.task, len(group.responses))
            return
        # The hot path of the service.
        name, graded, correct = task.name, self.graded, self.correct
        add_reward = self.response.rewards.add
        for text in group.responses:
            try:
                result = grade(task, problem, text)
            except Exception as error:
                self.fail(error, name)
                continue
            reward = add_reward()
            graded.append(name)
            if result.correct:
                correct.append(name)
                reward.value, reward.correct = 1.0, True
            if result.answer is not None:
                reward.answer = result.answer

    def finish(self) -> BatchTally:
        self.tally.graded.update(self.graded)
        self.tally.correct.update(self.correct)
        return self.tally


def score(
    request: reward_pb2.ScoreRequest, metrics: RewardMetrics | None = None
) -> reward_pb2.ScoreResponse:
    """One reward per item of `request`, in order, then one per response of each group; a record
    that cannot be graded gets `error` set (never an exception)."""
    batch = _Batch()
    batch.items(request.items)
    for group in request.groups:
        batch.group(group)
    tally = batch.finish()
    records = len(batch.response.rewards)
    if metrics is not None:
        _record(metrics, tally, records)
    errors = sum(tally.errors.values())
    if errors:
        log.info("batch with record errors", extra={"items": records, "errors": errors})
    return batch.response


def score_request(
    groups: Iterable[tuple[data_pb2.Problem, Iterable[str]]],
) -> reward_pb2.ScoreRequest:
    """A request grading each group's responses against its problem, sent once per group."""
    request = reward_pb2.ScoreRequest()
    add_group = request.groups.add
    for problem, responses in groups:
        add_group(problem=problem, responses=responses)
    return request


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
