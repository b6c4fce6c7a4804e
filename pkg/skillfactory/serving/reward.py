"""The reward service: batch scoring of responses with the task graders.

A `Score` request holds items (a response with its problem) and groups (responses to one problem,
as GRPO samples them: the problem is sent, and read, once for the group; `score_request` builds
such a request). Every response is scored by its problem's reward terms
(`skillfactory.tasks.rewards`: the task grader's correctness unless the run's `grpo.rewards`
named others, each term's value in `Reward.terms`); the answer holds one `Reward` per record: the items in order, then each group's responses in order. A record that
cannot be graded (no task, unknown task, a problem missing a field its grader needs) gets `error`
set and value 0, and a group whose problem cannot be read gets it for each response; the batch
never fails for it. Graders parse model text with bounded, non-evaluating parsers: nothing a
model writes is executed. A reward plugin (`package.module:function`) is code a run spec names: the
service runs one only when started with `--allow-reward-plugins` (`allow_plugins`), in a worker
process within a time budget; otherwise, or when it raises or times out, that term scores 0 and
is counted.

Series added to the server's registry:

- `skillfactory_reward_answers_graded_total{task}` — records graded (errors excluded);
- `skillfactory_reward_answers_correct_total{task}` — of which correct (reward mean = ratio);
- `skillfactory_reward_record_errors_total{reason}` — records answered with an error;
- `skillfactory_reward_batch_items` — histogram of records (items and group responses) per request;
- `skillfactory_reward_grader_timeouts_total{task}` — answers graded wrong because their check was
  stopped (past its time budget, or its worker process died): the process-wide count of
  `skillfactory.tasks.bounded_check`;
- `skillfactory_reward_term_value_sum{reward}` and `skillfactory_reward_term_values_total{reward}`
  — each reward term's values summed, and counted (mean = ratio);
- `skillfactory_reward_term_failures_total{reward}` — term values that raised, timed out or were
  not allowed (scored 0).
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from skillfactory.serving.logs import bind_run_id
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.tasks import Problem, ProblemFieldError, UnknownTaskError, task_of
from skillfactory.tasks.bounded_check import stopped_checks
from skillfactory.tasks.rewards import Scored, score_group
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
        self.term_sum = Counter(
            "skillfactory_reward_term_value_sum",
            "Values of each reward term (grpo.rewards, unweighted), summed.",
            ("reward",),
            registry=registry,
        )
        self.term_values = Counter(
            "skillfactory_reward_term_values",
            "Values of each reward term scored (mean = value_sum / values).",
            ("reward",),
            registry=registry,
        )
        self.term_failures = Counter(
            "skillfactory_reward_term_failures",
            "Reward term values that raised, timed out or were not allowed (scored 0).",
            ("reward",),
            registry=registry,
        )
        registry.register(GraderTimeouts())


@dataclass
class BatchTally:
    """Counts of one batch, added to the metrics once per request rather than once per item."""

    graded: Tally[str]
    correct: Tally[str]
    errors: Tally[str]
    term_sum: dict[str, float] = field(default_factory=dict)
    term_values: Tally[str] = field(default_factory=Tally)
    term_failures: Tally[str] = field(default_factory=Tally)

    @classmethod
    def empty(cls) -> BatchTally:
        return cls(Tally(), Tally(), Tally())


class RecordError(ValueError):
    """An item that cannot be graded; `reason` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_task(problem: Problem) -> None:
    if not problem.task:
        raise RecordError("missing_field", "problem has no task")
    try:
        task_of(problem)
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

    def __init__(self, allow_plugins: bool = False) -> None:
        self.response = reward_pb2.ScoreResponse()
        self.tally = BatchTally.empty()
        self.allow_plugins = allow_plugins
        self.graded: list[str] = []  # task names, counted once at the end (cheaper than per item)
        self.correct: list[str] = []

    def fail(self, error: Exception, task: str, records: int = 1) -> None:
        """Answers `records` records with the error."""
        reason, message = _error_of(error, task)
        self.tally.errors[reason] += records
        add_reward = self.response.rewards.add
        for _ in range(records):
            add_reward(error=message)

    def scored(self, problem: Problem, responses: list[str], tokens: list[int] | None) -> None:
        """Scores one problem's responses and answers a record for each."""
        try:
            _check_task(problem)
            results = score_group(problem, responses, tokens, allow_plugins=self.allow_plugins)
        except Exception as error:
            self.fail(error, problem.task, len(responses))
            return
        for result in results:
            if result.error is not None:
                self.fail(result.error, problem.task)
            else:
                self.add(problem.task, result)

    def add(self, task: str, result: Scored) -> None:
        reward = self.response.rewards.add()
        self.graded.append(task)
        if result.correct:
            self.correct.append(task)
            reward.correct = True
        reward.value = result.value
        if result.answer is not None:
            reward.answer = result.answer
        reward.terms.update(result.terms)
        reward.failed_terms.extend(result.failed)
        tally = self.tally
        for name, value in result.terms.items():
            tally.term_sum[name] = tally.term_sum.get(name, 0.0) + value
            tally.term_values[name] += 1
        tally.term_failures.update(result.failed)

    def items(self, items: Iterable[reward_pb2.ScoreItem]) -> None:
        problems = ProblemCache()
        for item in items:
            try:
                problem = problems.get(item.problem)
            except Exception as error:
                self.fail(error, item.problem.task)
                continue
            self.scored(problem, [item.response], None)

    def group(self, group: reward_pb2.ScoreGroup) -> None:
        message = group.problem
        try:
            problem = problem_from_proto(message)
        except Exception as error:
            self.fail(error, message.task, len(group.responses))
            return
        responses = list(group.responses)
        tokens = list(group.response_tokens)
        self.scored(problem, responses, tokens if len(tokens) == len(responses) else None)

    def finish(self) -> BatchTally:
        self.tally.graded.update(self.graded)
        self.tally.correct.update(self.correct)
        return self.tally


def score(
    request: reward_pb2.ScoreRequest,
    metrics: RewardMetrics | None = None,
    *,
    allow_plugins: bool = False,
) -> reward_pb2.ScoreResponse:
    """One reward per item of `request`, in order, then one per response of each group; a record
    that cannot be graded gets `error` set (never an exception). Reward plugins run only with
    `allow_plugins`."""
    batch = _Batch(allow_plugins)
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
    for name, count in tally.term_values.items():
        metrics.term_sum.labels(name).inc(tally.term_sum[name])
        metrics.term_values.labels(name).inc(count)
    for name, count in tally.term_failures.items():
        metrics.term_failures.labels(name).inc(count)


class RewardServicer(reward_pb2_grpc.RewardServiceServicer):
    """`RewardService` over the task graders."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, allow_plugins: bool = False
    ) -> None:
        self.metrics = RewardMetrics(registry) if registry is not None else None
        self.allow_plugins = allow_plugins

    def Score(  # noqa: N802 (the RPC's name)
        self, request: reward_pb2.ScoreRequest, context: grpc.ServicerContext
    ) -> reward_pb2.ScoreResponse:
        run_id = dict(context.invocation_metadata() or ()).get(RUN_ID_METADATA)
        with bind_run_id(str(run_id) if run_id else None):
            return score(request, self.metrics, allow_plugins=self.allow_plugins)

    def add_to(self, server: grpc.Server) -> None:
        reward_pb2_grpc.add_RewardServiceServicer_to_server(self, server)


def setup_reward_server(config: ServingConfig, *, allow_plugins: bool = False) -> ServiceServer:
    """A reward server (not started yet) with its servicer and metrics; reward plugins run only
    with `allow_plugins` (`serve reward --allow-reward-plugins`)."""
    server = ServiceServer("reward", config)
    servicer = RewardServicer(server.metrics.registry, allow_plugins=allow_plugins)
    server.add_service(SERVICE_NAME, servicer.add_to)
    return server
