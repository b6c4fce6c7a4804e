"""The rollout service: generation over one `Engine`, and weight reloads between requests.

- `Generate` answers `n` completions (token ids, behaviour logprobs, policy version) per prompt.
- `GenerateStream` sends each prompt's completions as soon as the engine call holding it is done;
  prompts go to the engine in chunks of at most `max_batch_size` rows (`n` rows per prompt).
- `UpdateWeights` takes a weight-store notice (`skillfactory.wire.weight_store`): the folder's
  checksum is verified first (outside the lock, so generation goes on meanwhile), then the engine
  loads it under the engine lock, i.e. between two engine calls. A notice whose version is not
  newer than the engine's is a no-op that answers the current version (notices may be re-sent or
  arrive out of order); a torn, tampered or pruned folder, or weights that do not fit the model,
  answer FAILED_PRECONDITION with the reason and leave the engine as it was.
- `GetPolicyVersion` answers the version in use and the model's name (-1: no model yet).
- Every request is held to the service's `GenerationLimits` (`max_tokens`, `n`, prompts; over one:
  INVALID_ARGUMENT naming it), and a caller that cancels or whose deadline passes abandons its
  work: dropped if waiting, and an engine call serving only abandoned work stops at its next
  decode step (so SIGTERM's grace period, which cancels calls in flight, ends a long call too).
- `generate_task` is the engine call of the service's sampler workers
  (`skillfactory.rollout.worker`): the `EngineSlot` builds the engine on the task's model
  (a service may start without one), rebuilds it for a new learner epoch, and catches up to the
  newest weights the learner published before sampling.

The engine is not assumed thread-safe: one thread calls it (`skillfactory.rollout.batcher`), and
all concurrent work — `Generate` and `GenerateStream` chunks, sampler workers' rollout tasks,
generation workers' stage-1 and eval tasks — is merged into engine calls of up to
`max_batch_size` rows; weight loads run on that thread between calls. A weight update may land
between two chunks of a request: every completion carries the version it was sampled with.

Series added to the server's registry:

- `skillfactory_rollout_tokens_generated_total` — completion tokens sampled;
- `skillfactory_rollout_tokens_per_second` — throughput of the latest engine call;
- `skillfactory_rollout_requests_total{method}` (`sampler`: a sampler worker's GRPO tasks,
  `generation`: a generation worker's stage-1 or eval tasks),
  `skillfactory_rollout_prompts_total`,
  `skillfactory_rollout_completions_total` — work asked for;
- `skillfactory_rollout_generate_seconds` — histogram of engine-call latency;
- `skillfactory_rollout_batch_rows` — histogram of rows (prompts × n) per engine call;
- `skillfactory_rollout_merged_requests` — histogram of requests merged into one engine call;
- `skillfactory_rollout_queue_wait_seconds` — histogram of how long work waited for its call;
- `skillfactory_rollout_policy_version` — version of the weights in use;
- `skillfactory_rollout_weight_sync_seconds` — histogram of verify + load time (of an
  `UpdateWeights` call, or of a sampler's catch-up from the weight store);
- `skillfactory_rollout_weight_sync_failures_total{reason}` — refused notices.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import TimeoutError as FutureTimeout

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from skillfactory.engines.base import Completion, Engine, Prompt, SamplingParams
from skillfactory.rollout.batcher import EngineBatcher, EngineState, Work
from skillfactory.rollout.engine_slot import EngineFactory, EngineSlot, NoModelLoaded
from skillfactory.rollout.limits import GenerationLimits
from skillfactory.serving.logs import bind_run_id
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.v1 import data_pb2, rollout_pb2, rollout_pb2_grpc
from skillfactory.wire.messages import InvalidMessage, completion_to_proto, sampling_from_proto
from skillfactory.wire.weight_store import TornWeights, verify

log = logging.getLogger(__name__)

SERVICE_NAME = "skillfactory.v1.Rollout"
"""Fully qualified service name, as the health service reports it."""

GENERATE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SYNC_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class RolloutMetrics:
    """Rollout-specific series in a server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tokens = Counter(
            "skillfactory_rollout_tokens_generated",
            "Completion tokens sampled.",
            registry=registry,
        )
        self.tokens_per_second = Gauge(
            "skillfactory_rollout_tokens_per_second",
            "Completion tokens per second of the latest engine call.",
            registry=registry,
        )
        self.requests = Counter(
            "skillfactory_rollout_requests",
            "Generation requests, by method (Generate, GenerateStream; sampler: a sampler worker's task).",
            ("method",),
            registry=registry,
        )
        self.prompts = Counter(
            "skillfactory_rollout_prompts", "Prompts generated for.", registry=registry
        )
        self.completions = Counter(
            "skillfactory_rollout_completions", "Completions sampled.", registry=registry
        )
        self.generate_seconds = Histogram(
            "skillfactory_rollout_generate_seconds",
            "Time of one engine generate call, in seconds.",
            buckets=GENERATE_BUCKETS,
            registry=registry,
        )
        self.batch_rows = Histogram(
            "skillfactory_rollout_batch_rows",
            "Rows (prompts × n) per engine generate call.",
            buckets=ROWS_BUCKETS,
            registry=registry,
        )
        self.policy_version = Gauge(
            "skillfactory_rollout_policy_version",
            "Policy version of the weights in use.",
            registry=registry,
        )
        self.weight_sync_seconds = Histogram(
            "skillfactory_rollout_weight_sync_seconds",
            "Time to verify and load a new policy version, in seconds.",
            buckets=SYNC_BUCKETS,
            registry=registry,
        )
        self.queue_wait_seconds = Histogram(
            "skillfactory_rollout_queue_wait_seconds",
            "Time work waited for the engine call that served it, in seconds.",
            buckets=GENERATE_BUCKETS,
            registry=registry,
        )
        self.merged_requests = Histogram(
            "skillfactory_rollout_merged_requests",
            "Requests (RPCs, rollout and generation tasks) merged into one engine call.",
            buckets=ROWS_BUCKETS,
            registry=registry,
        )
        self.weight_sync_failures = Counter(
            "skillfactory_rollout_weight_sync_failures",
            "Weight updates refused, by reason.",
            ("reason",),
            registry=registry,
        )

    def engine_call(self, rows: int, works: int, seconds: float, tokens: int) -> None:
        """One engine call of `rows` rows merged from `works` requests."""
        self.tokens.inc(tokens)
        self.tokens_per_second.set(tokens / seconds if seconds > 0 else 0.0)
        self.generate_seconds.observe(seconds)
        self.batch_rows.observe(rows)
        self.merged_requests.observe(works)

    def waited(self, seconds: float) -> None:
        self.queue_wait_seconds.observe(seconds)

    def engine_ready(self, engine: Engine, reloaded: bool, seconds: float) -> None:
        """The engine was caught up before a call (a weight load counts as a weight sync)."""
        if reloaded:
            self.weight_sync_seconds.observe(seconds)
        self.policy_version.set(engine.policy_version)


class InvalidRequest(InvalidMessage):
    """A request that cannot be served as asked (answered INVALID_ARGUMENT)."""


class WeightSyncError(RuntimeError):
    """A weight update that cannot be loaded (answered FAILED_PRECONDITION)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def prompts_of(request: rollout_pb2.GenerateRequest) -> list[Prompt]:
    """The engine prompts of a request: raw text, or one user message each."""
    if request.apply_chat_template:
        return [[{"role": "user", "content": p}] for p in request.prompts]
    return list(request.prompts)


class Abandoned(Exception):
    """The caller of a request is gone (`code`: CANCELLED, or DEADLINE_EXCEEDED past its
    deadline); its work was dropped or stopped."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


WAIT_SLICE_S = 0.1
"""How often a request waiting for its engine call checks that its caller is still there."""


def wait_for(works: Sequence[Work], context: grpc.ServicerContext | None) -> list[list[Completion]]:
    """The works' completions, in order; when the caller cancels or its deadline passes first,
    every work is abandoned (`Work.abandon`) and `Abandoned` raised."""
    results: list[list[Completion]] = []
    for work in works:
        while True:
            try:
                results += work.future.result(timeout=None if context is None else WAIT_SLICE_S)
                break
            except FutureTimeout:
                assert context is not None
                gone = caller_gone(context)
                if gone is not None:
                    for abandoned in works:
                        abandoned.abandon()
                    raise gone from None
    return results


def caller_gone(context: grpc.ServicerContext) -> Abandoned | None:
    """Why nobody waits for this call's answer any more (None: the caller still does)."""
    left = context.time_remaining()
    if left is not None and left <= 0:
        return Abandoned(grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed")
    if not context.is_active():
        return Abandoned(grpc.StatusCode.CANCELLED, "the call was cancelled")
    return None


class RolloutServicer(rollout_pb2_grpc.RolloutServicer):
    """`Rollout` over one engine."""

    def __init__(
        self,
        engine: Engine | None,
        *,
        engine_factory: EngineFactory | None = None,
        model: str = "",
        max_batch_size: int = 64,
        registry: CollectorRegistry | None = None,
        linger_s: float = 0.02,
        limits: GenerationLimits | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.slot = EngineSlot(engine_factory, engine, model)
        self.max_batch_size = max_batch_size
        self.limits = limits or GenerationLimits()
        """Per-request caps; a request over one is answered INVALID_ARGUMENT."""
        self.metrics = RolloutMetrics(registry) if registry is not None else None
        self.batcher = EngineBatcher(
            self.slot, max_batch_size, linger_s=linger_s, observer=self.metrics
        )
        if self.metrics is not None and engine is not None:
            self.metrics.policy_version.set(engine.policy_version)

    @property
    def engine(self) -> Engine:
        """The engine in use (`NoModelLoaded` before a model was named)."""
        return self.slot.engine

    @property
    def model(self) -> str:
        return self.slot.model

    def close(self) -> None:
        """Stop the engine thread, then release the engine."""
        self.batcher.close()
        self.slot.close()

    # ---- generation ---------------------------------------------------------------------------

    def chunks(self, count: int, n: int) -> Iterator[range]:
        """Prompt index ranges of at most `max_batch_size` rows (at least one prompt each)."""
        size = max(1, self.max_batch_size // max(n, 1))
        for start in range(0, count, size):
            yield range(start, min(start + size, count))

    def _submit(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
        state: EngineState | None = None,
        context: grpc.ServicerContext | None = None,
    ) -> list[list[Completion]]:
        """The prompts' completions, each chunk of at most `max_batch_size` rows a work the
        batcher may merge with others'. The chunks are queued together, so a weight load asked
        for meanwhile lands after all of them: one policy version for the whole request. With
        the RPC's `context`, the work is abandoned when the caller goes (`wait_for`)."""
        chunks = [
            ([prompts[i] for i in indices], None if seeds is None else [seeds[i] for i in indices])
            for indices in self.chunks(len(prompts), params.n)
        ]
        results = wait_for(self.batcher.submit_all(chunks, params, state), context)
        if self.metrics is not None:
            self.metrics.prompts.inc(len(prompts))
            self.metrics.completions.inc(sum(len(group) for group in results))
        return results

    def _prepare(
        self, request: rollout_pb2.GenerateRequest, method: str
    ) -> tuple[list[Prompt], SamplingParams]:
        if self.metrics is not None:
            self.metrics.requests.labels(method).inc()
        sampling = request.sampling if request.HasField("sampling") else None
        prompts, params = prompts_of(request), sampling_from_proto(sampling, int(request.n))
        over = self.limits.refusal(params, prompts)
        if over is not None:
            raise InvalidRequest(over)
        return prompts, params

    def generate(
        self, request: rollout_pb2.GenerateRequest, context: grpc.ServicerContext | None = None
    ) -> rollout_pb2.GenerateResponse:
        """All prompts' completions, sampled with one policy version; stops when the caller
        cancels or its deadline passes (`Abandoned`)."""
        prompts, params = self._prepare(request, "Generate")
        self.slot.engine  # noqa: B018 (NoModelLoaded before anything was loaded)
        response = rollout_pb2.GenerateResponse()
        for index, completions in enumerate(self._submit(prompts, params, context=context)):
            response.results.append(_prompt_completions(index, completions))
        response.policy_version = self.engine.policy_version
        return response

    def generate_stream(
        self, request: rollout_pb2.GenerateRequest, context: grpc.ServicerContext | None = None
    ) -> Iterator[rollout_pb2.PromptCompletions]:
        """Each prompt's completions as soon as its chunk is done; stops early when the client
        goes away."""
        prompts, params = self._prepare(request, "GenerateStream")
        self.slot.engine  # noqa: B018 (NoModelLoaded before anything was loaded)
        for indices in self.chunks(len(prompts), params.n):
            results = self._submit([prompts[i] for i in indices], params, context=context)
            for index, completions in zip(indices, results, strict=True):
                yield _prompt_completions(index, completions)

    def generate_task(
        self, task: data_pb2.RolloutTask, prompts: Sequence[Prompt], params: SamplingParams
    ) -> list[list[Completion]]:
        """A sampler worker's engine call: on the task's model and epoch, caught up to the newest
        verified weights the learner published."""
        if self.metrics is not None:
            self.metrics.requests.labels("sampler").inc()
        state = EngineState(task.model_uri, task.epoch, task.weights_uri)
        return self._submit(prompts, params, state=state)

    def generate_for(
        self, model: str, prompts: Sequence[Prompt], params: SamplingParams, seeds: Sequence[int]
    ) -> list[list[Completion]]:
        """A generation worker's engine call (stage 1, eval): on `model`, with per-prompt seeds."""
        if self.metrics is not None:
            self.metrics.requests.labels("generation").inc()
        return self._submit(prompts, params, seeds, EngineState(model=model))

    # ---- weights ------------------------------------------------------------------------------

    def update_weights(self, update: data_pb2.WeightUpdate) -> rollout_pb2.UpdateWeightsResponse:
        """Verify and load a published version (see the module notes); raises `WeightSyncError`."""
        if update.version < 0:
            raise InvalidRequest(f"version must be ≥ 0, got {update.version}")
        current = self.engine.policy_version
        if update.version <= current:
            log.info("stale weight update ignored", extra={"version": update.version})
            return rollout_pb2.UpdateWeightsResponse(policy_version=current)
        start = time.perf_counter()
        try:
            folder = verify(update)
        except TornWeights as error:
            self._failed("torn")
            raise WeightSyncError("torn", str(error)) from None
        except OSError as error:  # a uri no folder can have (a name too long), or unreadable
            self._failed("torn")
            raise WeightSyncError(
                "torn", f"version {update.version}: cannot read {update.uri!r}: {error}"
            ) from None

        def load() -> int:
            engine = self.engine
            if update.version > engine.policy_version:  # else a concurrent update won
                engine.load_weights(folder, int(update.version))
            return engine.policy_version

        try:
            version = self.batcher.exclusive(load)
        except (OSError, ValueError, RuntimeError) as error:
            self._failed("load")
            raise WeightSyncError(
                "load", f"version {update.version}: cannot load {folder}: {error}"
            ) from None
        seconds = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.weight_sync_seconds.observe(seconds)
            self.metrics.policy_version.set(version)
        log.info("weights loaded", extra={"version": version, "seconds": round(seconds, 3)})
        return rollout_pb2.UpdateWeightsResponse(policy_version=version, load_seconds=seconds)

    def _failed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.weight_sync_failures.labels(reason).inc()

    # ---- RPCs ---------------------------------------------------------------------------------

    def Generate(  # noqa: N802 (the RPC's name)
        self, request: rollout_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> rollout_pb2.GenerateResponse:
        with bind_run_id(request.run_id or None):
            try:
                return self.generate(request, context)
            except InvalidMessage as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            except NoModelLoaded as error:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
            except Abandoned as gone:
                log.info("generation abandoned", extra={"reason": str(gone)})
                context.abort(gone.code, str(gone))
            raise AssertionError("unreachable")

    def GenerateStream(  # noqa: N802
        self, request: rollout_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[rollout_pb2.PromptCompletions]:
        with bind_run_id(request.run_id or None):
            try:
                yield from self.generate_stream(request, context)
            except InvalidMessage as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            except NoModelLoaded as error:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
            except Abandoned as gone:
                log.info("generation stream abandoned", extra={"reason": str(gone)})
                context.abort(gone.code, str(gone))

    def UpdateWeights(  # noqa: N802
        self, request: rollout_pb2.UpdateWeightsRequest, context: grpc.ServicerContext
    ) -> rollout_pb2.UpdateWeightsResponse:
        update = request.update
        with bind_run_id(update.run_id or None):
            try:
                return self.update_weights(update)
            except InvalidMessage as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            except WeightSyncError as error:
                log.warning("weight update refused", extra={"error": str(error)})
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
            except NoModelLoaded as error:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
            raise AssertionError("unreachable")

    def GetPolicyVersion(  # noqa: N802
        self, request: rollout_pb2.GetPolicyVersionRequest, context: grpc.ServicerContext
    ) -> rollout_pb2.GetPolicyVersionResponse:
        version = self.engine.policy_version if self.slot.loaded else -1
        return rollout_pb2.GetPolicyVersionResponse(policy_version=version, model=self.model)

    def add_to(self, server: grpc.Server) -> None:
        rollout_pb2_grpc.add_RolloutServicer_to_server(self, server)


def _prompt_completions(
    index: int, completions: Sequence[Completion]
) -> rollout_pb2.PromptCompletions:
    message = rollout_pb2.PromptCompletions(prompt_index=index)
    message.completions.extend(completion_to_proto(c) for c in completions)
    return message


def setup_rollout_server(
    config: ServingConfig,
    engine: Engine | None,
    *,
    model: str = "",
    max_batch_size: int = 64,
    engine_factory: EngineFactory | None = None,
    limits: GenerationLimits | None = None,
) -> tuple[ServiceServer, RolloutServicer]:
    """A rollout server (not started yet) over `engine` (or, when None, the engine that
    `engine_factory` builds on the first rollout task's model), with its servicer and metrics."""
    server = ServiceServer("rollout", config)
    servicer = RolloutServicer(
        engine,
        engine_factory=engine_factory,
        model=model,
        max_batch_size=max_batch_size,
        registry=server.metrics.registry,
        limits=limits,
    )
    server.add_service(SERVICE_NAME, servicer.add_to)
    return server, servicer
