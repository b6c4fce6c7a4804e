"""The learner service: the run controller and its gRPC API (embedded execution).

`SubmitRun` validates the protobuf `RunSpec` (converted to the pydantic spec with
`run_spec_from_proto`; an invalid spec gets INVALID_ARGUMENT naming each bad field path) and
queues the run. Runs execute one at a time, in order of submission, on a background thread that
runs the embedded `Pipeline` (data → sft → grpo → eval). Every event the pipeline emits becomes a
`RunEvent`:

- a stage `started` / `finished` → a `message` event ("started", "finished in N s") on that stage;
- `progress` (stage 1), `step` (GRPO) and `task` (eval) → a `metrics` event with the numeric
  fields (eval values are keyed `<model>/<task>/<metric>`; GRPO's `step` is the policy version);
- run state changes (RUNNING, then SUCCEEDED / FAILED / CANCELLED) → a `state` event with no
  stage; the terminal one is always the last event of a run.

`WatchRun` streams the events after `after_sequence` (so a late watcher gets the events so far,
then live ones) and ends after the terminal event. Unknown run ids get NOT_FOUND.

Cancellation is cooperative: `CancelRun` on a pending run cancels it at once; on the running run
it sets a flag that the controller checks each time the pipeline reports an event (a stage
starting or finishing, a stage-1 chunk, a GRPO step, an eval task) and then raises out of the
event callback, so the stage's own cleanup (engine close, sampler stop) runs. A stage that reports
nothing for a while (SFT trains without events) is cancelled when it finishes. Checkpoints already
written stay, so resubmitting the same spec resumes.

Run state lives in a `RunStore` under the state directory. A learner that restarts lists every
old run and resumes the run that was RUNNING when it died (the pipeline resumes from its own
checkpoints), then the PENDING ones. A graceful stop interrupts the running run the same way as a
cancel but leaves it RUNNING, so the next start resumes it.

Series added to the server's registry: `skillfactory_learner_runs{state}`,
`skillfactory_learner_current_stage{stage}`, `skillfactory_learner_step`,
`skillfactory_learner_loss`, `skillfactory_learner_reward_mean`,
`skillfactory_learner_learning_rate`, `skillfactory_learner_policy_version`,
`skillfactory_learner_dropped_groups{reason}`, `skillfactory_learner_steps_total`,
`skillfactory_learner_samples_trained_total`, `skillfactory_learner_weight_sync_seconds`,
`skillfactory_learner_staleness` (completions per staleness, histogram),
`skillfactory_learner_grad_norm`, `skillfactory_learner_kl`, `skillfactory_learner_step_seconds`,
`skillfactory_learner_duplicate_groups_total`, and the GRPO streams' `skillfactory_queue_depth` and
`skillfactory_queue_pending` (label `stream`: groups, prompts).

With a `Cluster`, GRPO samples with the rollout services' sampler workers over the shared queue
(`skillfactory.stages.rollouts.RemoteRollouts`); the other stages run in this process.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from skillfactory.contracts.runspec_proto import run_spec_from_proto
from skillfactory.engines.base import Engine
from skillfactory.runspec import STAGES, InvalidRunSpec, RunSpec, parse_run_spec
from skillfactory.serving.logs import bind_run_id
from skillfactory.serving.run_store import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    STATES,
    SUCCEEDED,
    RunEventRecord,
    RunRecord,
    RunStore,
    StageRecord,
)
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.stages.rollouts import Cluster
from skillfactory.v1 import learner_pb2, learner_pb2_grpc, run_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = "skillfactory.v1.Learner"
"""Fully qualified service name, as the health service reports it."""

DEFAULT_PAGE_SIZE = 100
STALENESS_BUCKETS = (0, 1, 2, 4, 8, 16)

EngineFactory = Callable[[str], Engine]


class RunNotFound(KeyError):
    """No run with this id."""


class _Cancelled(Exception):
    """Raised from the event callback to stop a run that was cancelled."""


class _Interrupted(Exception):
    """Raised from the event callback when the learner shuts down (the run stays RUNNING)."""


class LearnerMetrics:
    """Learner series in a server's registry, fed by the controller."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, text: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"skillfactory_learner_{name}", text, labels, registry=registry)

        self.runs = gauge("runs", "Runs by state.", ("state",))
        self.stage = gauge("current_stage", "1 for the stage the running run is in.", ("stage",))
        self.step = gauge("step", "GRPO steps done (the policy version) of the running run.")
        self.loss = gauge("loss", "Loss of the last GRPO step.")
        self.reward_mean = gauge("reward_mean", "Mean reward of the last GRPO step's samples.")
        self.learning_rate = gauge("learning_rate", "Learning rate of the last GRPO step.")
        self.policy_version = gauge("policy_version", "Policy version the learner last produced.")
        self.dropped = gauge(
            "dropped_groups",
            "Groups the learner dropped in the running run, by reason.",
            ("reason",),
        )
        self.steps = Counter(
            "skillfactory_learner_steps", "GRPO steps trained by this learner.", registry=registry
        )
        self.samples = Counter(
            "skillfactory_learner_samples_trained",
            "Completions trained on by this learner.",
            registry=registry,
        )
        self.weight_sync = Histogram(
            "skillfactory_learner_weight_sync_seconds",
            "Seconds to hand new weights to the engine after a step.",
            registry=registry,
        )
        self.staleness = Histogram(
            "skillfactory_learner_staleness",
            "Completions trained on, by staleness (learner version − policy version).",
            buckets=STALENESS_BUCKETS,
            registry=registry,
        )
        self.grad_norm = gauge(
            "grad_norm", "Gradient norm of the last GRPO step (before clipping)."
        )
        self.kl = gauge("kl", "KL to the reference model in the last GRPO step (0 without one).")
        self.step_seconds = Histogram(
            "skillfactory_learner_step_seconds",
            "Wall time of one GRPO optimizer step, in seconds.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self.duplicates = Counter(
            "skillfactory_learner_duplicate_groups",
            "Groups dropped because their prompt was already trained on or waiting.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "skillfactory_queue_depth",
            "Entries of a GRPO stream not yet delivered to its readers (groups: the learner; "
            "prompts: the sampler workers).",
            ("stream",),
            registry=registry,
        )
        self.queue_pending = Gauge(
            "skillfactory_queue_pending",
            "Entries of a GRPO stream delivered and not yet acked.",
            ("stream",),
            registry=registry,
        )
        self._duplicates_seen = 0
        self.set_stage("")
        for state in STATES:
            self.runs.labels(state).set(0)

    def set_stage(self, current: str) -> None:
        """1 for the running run's stage, 0 for the others (all 0 between runs)."""
        for stage in STAGES:
            self.stage.labels(stage).set(1 if stage == current else 0)

    def on_step(self, step: dict[str, Any]) -> None:
        version = int(step.get("version", 0))
        self.step.set(version)
        self.policy_version.set(version)
        self.loss.set(float(step.get("loss", 0.0)))
        self.reward_mean.set(float(step.get("reward_mean", 0.0)))
        self.learning_rate.set(float(step.get("learning_rate", 0.0)))
        self.dropped.labels("stale").set(float(step.get("dropped_stale", 0)))
        self.dropped.labels("zero_variance").set(float(step.get("dropped_zero_variance", 0)))
        self.steps.inc()
        self.samples.inc(float(step.get("samples", 0)))
        self.grad_norm.set(float(step.get("grad_norm", 0.0)))
        self.kl.set(float(step.get("kl", 0.0)))
        if "seconds" in step:
            self.step_seconds.observe(float(step["seconds"]))
        duplicates = int(step.get("duplicate_groups", 0))
        if duplicates < self._duplicates_seen:  # a new stage counts from 0
            self._duplicates_seen = 0
        self.duplicates.inc(duplicates - self._duplicates_seen)
        self._duplicates_seen = duplicates
        for stream, levels in (step.get("queue") or {}).items():
            self.queue_depth.labels(stream).set(float(levels.get("depth", 0)))
            self.queue_pending.labels(stream).set(float(levels.get("pending", 0)))
        if "weight_sync_seconds" in step:
            self.weight_sync.observe(float(step["weight_sync_seconds"]))
        for staleness, count in (step.get("staleness") or {}).items():
            for _ in range(int(count)):
                self.staleness.observe(float(staleness))


def _scalars(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if v is None or isinstance(v, (str, int, float, bool))}


def _numbers(event: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in event.items() if isinstance(v, (int, float))}


class RunController:
    """Queues, executes, cancels and records runs; thread-safe."""

    def __init__(
        self,
        state_dir: str | Path,
        engine_factory: EngineFactory | None = None,
        metrics: LearnerMetrics | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.store = RunStore(state_dir)
        self.engine_factory = engine_factory
        self.cluster = cluster
        self.metrics = metrics
        self._cond = threading.Condition()
        self._runs: dict[str, RunRecord] = {}
        self._queue: deque[str] = deque()
        self._cancel: dict[str, str] = {}
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.rollouts: dict[str, int] = {}
        """Rollout replicas that registered (address → policy version they reported)."""
        resumed: list[str] = []
        for record in self.store.load_all():
            self._runs[record.run_id] = record
            if record.state == RUNNING:
                resumed.append(record.run_id)
            elif record.state == PENDING:
                self._queue.append(record.run_id)
        self._queue.extendleft(reversed(resumed))
        self._update_run_gauges()

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="learner-runs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop taking runs; the running one stops at its next event and stays RUNNING."""
        with self._cond:
            self._closing.set()
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    # API -------------------------------------------------------------------------------------

    def submit(self, spec: RunSpec) -> RunRecord:
        from skillfactory.stages.pipeline import effective_spec, stages_to_run

        stages: dict[str, StageRecord] = {
            stage: StageRecord() for stage in stages_to_run(effective_spec(spec))
        }
        record = RunRecord(
            run_id=uuid.uuid4().hex[:12],
            name=spec.name,
            spec=spec.model_dump(mode="json"),
            stages=stages,
        )
        with self._cond:
            self._runs[record.run_id] = record
            self.store.save_status(record)
            self._emit(record, "", "state", PENDING)
            self._queue.append(record.run_id)
            self._update_run_gauges()
            self._cond.notify_all()
        log.info("run submitted", extra={"run_id": record.run_id, "run_name": record.name})
        return record

    def get(self, run_id: str) -> RunRecord:
        with self._cond:
            record = self._runs.get(run_id)
            if record is None:
                raise RunNotFound(run_id)
            return record

    def list(self) -> list[RunRecord]:
        with self._cond:
            return sorted(self._runs.values(), key=lambda r: r.created_at)

    def cancel(self, run_id: str, reason: str = "") -> RunRecord:
        reason = reason or "cancelled by request"
        with self._cond:
            record = self.get(run_id)
            if record.state == PENDING:
                if run_id in self._queue:
                    self._queue.remove(run_id)
                self._set_state(record, CANCELLED, reason)
            elif record.state == RUNNING and run_id not in self._cancel:
                self._cancel[run_id] = reason
                self._emit(record, record.current_stage, "message", f"cancel requested: {reason}")
            return record

    def watch(
        self, run_id: str, after: int = 0, active: Callable[[], bool] = lambda: True
    ) -> Iterator[RunEventRecord]:
        """Events after sequence `after`, then live ones, until the terminal event (or the
        learner closes, or `active()` turns false)."""
        record = self.get(run_id)
        index = max(0, after)
        while True:
            with self._cond:
                while (
                    len(record.events) <= index
                    and not record.terminal
                    and not self.closing
                    and active()
                ):
                    self._cond.wait(0.5)
                batch = record.events[index:]
                index += len(batch)
                done = record.terminal or self.closing or not active()
            yield from batch
            if done:
                return

    # execution -------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self.closing:
                    self._cond.wait()
                if self.closing:
                    return
                record = self._runs[self._queue.popleft()]
            if record.terminal:
                continue
            with bind_run_id(record.run_id):
                self._execute(record)

    def _execute(self, record: RunRecord) -> None:
        from skillfactory.stages.pipeline import Pipeline

        resumed = record.state == RUNNING
        with self._cond:
            if resumed:
                self._emit(record, "", "message", "resumed after a learner restart")
            self._set_state(record, RUNNING)
        log.info("run started", extra={"resumed": resumed})
        try:
            spec = parse_run_spec(record.spec, f"run {record.run_id}")
            pipeline = Pipeline(
                spec,
                engine_factory=self.engine_factory,
                on_event=lambda stage, event: self._on_event(record, stage, event),
                cluster=self.cluster,
            )
            pipeline.run()
        except _Interrupted:
            with self._cond:
                self._emit(record, record.current_stage, "message", "interrupted: learner stopped")
            log.info("run interrupted by shutdown; it resumes on the next start")
        except _Cancelled:
            with self._cond:
                self._close_stages(record, CANCELLED)
                self._set_state(record, CANCELLED, self._cancel.pop(record.run_id, "cancelled"))
            log.info("run cancelled")
        except Exception as error:
            log.exception("run failed")
            with self._cond:
                self._close_stages(record, FAILED)
                self._set_state(record, FAILED, f"{type(error).__name__}: {error}")
        else:
            with self._cond:
                record.current_stage = ""
                self._set_state(record, SUCCEEDED)
            log.info("run succeeded")
        finally:
            self._cancel.pop(record.run_id, None)
            if self.metrics is not None:
                self.metrics.set_stage("")

    def _on_event(self, record: RunRecord, stage: str, event: dict[str, Any]) -> None:
        if self.closing:
            raise _Interrupted
        if record.run_id in self._cancel:
            raise _Cancelled
        kind = event.get("event")
        now = time.time()
        with self._cond:
            status = record.stages.setdefault(stage, StageRecord())
            data = _scalars(event)
            if kind == "started":
                status.state, status.started_at, status.progress = RUNNING, now, 0.0
                record.current_stage = stage
                if self.metrics is not None:
                    self.metrics.set_stage(stage)
                self._emit(record, stage, "message", "started", data=data)
            elif kind == "finished":
                status.state, status.finished_at, status.progress = SUCCEEDED, now, 1.0
                seconds = event.get("seconds")
                self._emit(record, stage, "message", f"finished in {seconds} s", data=data)
            elif kind == "step":
                version = int(event.get("version", 0))
                steps = int(record.spec.get("grpo", {}).get("steps", 0)) or 1
                status.progress = min(1.0, version / steps)
                record.policy_version = version
                if self.metrics is not None:
                    self.metrics.on_step(event)
                self._emit(record, stage, "metrics", _numbers(event), step=version, data=data)
            elif kind == "progress":
                done, total = int(event.get("done", 0)), int(event.get("total", 0))
                status.progress = done / total if total else 0.0
                self._emit(record, stage, "metrics", _numbers(event), step=done, data=data)
            elif kind == "task":
                prefix = f"{event.get('model', '')}/{event.get('task', '')}/"
                self._emit(record, stage, "metrics", _numbers(event, prefix), data=data)
            else:
                self._emit(record, stage, "message", str(kind), data=data)
            self.store.save_status(record)

    # bookkeeping (callers hold the lock) -----------------------------------------------------

    def _emit(
        self,
        record: RunRecord,
        stage: str,
        kind: str,
        value: Any,
        step: int = 0,
        data: dict[str, Any] | None = None,
    ) -> None:
        sequence = record.events[-1].sequence + 1 if record.events else 1
        event = RunEventRecord(sequence, time.time(), stage, kind, value, step, data or {})
        record.events.append(event)
        record.updated_at = event.time
        self.store.append_event(record.run_id, event)
        self._cond.notify_all()

    def _set_state(self, record: RunRecord, state: str, message: str = "") -> None:
        record.state = state
        if message:
            record.message = message
        self._emit(record, "", "state", state)
        self.store.save_status(record)
        self._update_run_gauges()

    def _close_stages(self, record: RunRecord, state: str) -> None:
        for status in record.stages.values():
            if status.state == RUNNING:
                status.state, status.finished_at = state, time.time()

    def _update_run_gauges(self) -> None:
        if self.metrics is None:
            return
        counts = dict.fromkeys(STATES, 0)
        for record in self._runs.values():
            counts[record.state] = counts.get(record.state, 0) + 1
        for state, count in counts.items():
            self.metrics.runs.labels(state).set(count)


# protobuf ----------------------------------------------------------------------------------


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _state(state: str) -> run_pb2.RunState:
    return run_pb2.RunState.Value(f"RUN_STATE_{state}")


def status_proto(record: RunRecord) -> run_pb2.RunStatus:
    """The API form of a run."""
    message = run_pb2.RunStatus(
        run_id=record.run_id,
        name=record.name,
        state=_state(record.state),
        current_stage=record.current_stage,
        policy_version=record.policy_version,
        message=record.message,
        created_at=_timestamp(record.created_at),
        updated_at=_timestamp(record.updated_at),
    )
    for name, stage in record.stages.items():
        message.stages.add(
            stage=name,
            state=_state(stage.state),
            progress=stage.progress,
            started_at=_timestamp(stage.started_at),
            finished_at=_timestamp(stage.finished_at),
        )
    return message


def event_proto(run_id: str, event: RunEventRecord) -> run_pb2.RunEvent:
    """The API form of an event."""
    message = run_pb2.RunEvent(
        run_id=run_id, sequence=event.sequence, time=_timestamp(event.time), stage=event.stage
    )
    if event.kind == "state":
        message.state = _state(str(event.value))
    elif event.kind == "metrics":
        message.metrics.step = event.step
        message.metrics.values.update({k: float(v) for k, v in dict(event.value).items()})
    else:
        message.message = str(event.value)
    return message


class LearnerServicer(learner_pb2_grpc.LearnerServicer):
    """`Learner` over a `RunController`."""

    def __init__(self, controller: RunController) -> None:
        self.controller = controller

    def _get(self, run_id: str, context: grpc.ServicerContext) -> RunRecord:
        try:
            return self.controller.get(run_id)
        except RunNotFound:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no run with id {run_id!r}")
            raise  # unreachable: abort raises

    def SubmitRun(  # noqa: N802 (the RPC's name)
        self, request: learner_pb2.SubmitRunRequest, context: grpc.ServicerContext
    ) -> learner_pb2.SubmitRunResponse:
        if not request.HasField("spec"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "spec: a run spec is required")
        try:
            spec = run_spec_from_proto(request.spec)
        except InvalidRunSpec as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        record = self.controller.submit(spec)
        return learner_pb2.SubmitRunResponse(run_id=record.run_id)

    def GetRun(  # noqa: N802
        self, request: learner_pb2.GetRunRequest, context: grpc.ServicerContext
    ) -> run_pb2.RunStatus:
        return status_proto(self._get(request.run_id, context))

    def ListRuns(  # noqa: N802
        self, request: learner_pb2.ListRunsRequest, context: grpc.ServicerContext
    ) -> learner_pb2.ListRunsResponse:
        size = request.page_size if request.page_size > 0 else DEFAULT_PAGE_SIZE
        try:
            start = int(request.page_token or 0)
            if start < 0:
                raise ValueError(start)
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a token ListRuns gave")
        runs = self.controller.list()
        page = runs[start : start + size]
        following = str(start + size) if start + size < len(runs) else ""
        return learner_pb2.ListRunsResponse(
            runs=[status_proto(r) for r in page], next_page_token=following
        )

    def CancelRun(  # noqa: N802
        self, request: learner_pb2.CancelRunRequest, context: grpc.ServicerContext
    ) -> run_pb2.RunStatus:
        self._get(request.run_id, context)
        return status_proto(self.controller.cancel(request.run_id, request.reason))

    def WatchRun(  # noqa: N802
        self, request: learner_pb2.WatchRunRequest, context: grpc.ServicerContext
    ) -> Iterator[run_pb2.RunEvent]:
        self._get(request.run_id, context)
        for event in self.controller.watch(
            request.run_id, int(request.after_sequence), context.is_active
        ):
            yield event_proto(request.run_id, event)

    def RegisterRollout(  # noqa: N802
        self, request: learner_pb2.RegisterRolloutRequest, context: grpc.ServicerContext
    ) -> learner_pb2.RegisterRolloutResponse:
        # Embedded execution keeps weights in process; the address is recorded for fan-out.
        if not request.address:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "address: required")
        self.controller.rollouts[request.address] = int(request.policy_version)
        return learner_pb2.RegisterRolloutResponse()

    def add_to(self, server: grpc.Server) -> None:
        learner_pb2_grpc.add_LearnerServicer_to_server(self, server)


class LearnerServer(ServiceServer):
    """A `ServiceServer` with the learner API and its run controller: `start` also starts the
    controller; `stop` first interrupts the running run (it stays RUNNING and resumes on the next
    start), then stops the gRPC server gracefully and waits up to `run_stop_timeout_s` for the
    run to reach its next event and stop (a stage without events, like SFT, may outlast it; the
    process then exits mid-stage, which the next start resumes like any crash)."""

    def __init__(
        self,
        config: ServingConfig,
        state_dir: str | Path,
        engine_factory: EngineFactory | None = None,
        run_stop_timeout_s: float = 60.0,
        cluster: Cluster | None = None,
    ) -> None:
        super().__init__("learner", config)
        self.run_stop_timeout_s = run_stop_timeout_s
        self.controller = RunController(
            state_dir, engine_factory, LearnerMetrics(self.metrics.registry), cluster
        )
        self.servicer = LearnerServicer(self.controller)
        self.add_service(SERVICE_NAME, self.servicer.add_to)

    def start(self) -> None:
        super().start()
        self.controller.start()

    def stop(self, grace_s: float | None = None) -> None:
        self.controller.close()
        super().stop(grace_s)
        self.controller.join(timeout=self.run_stop_timeout_s)


def setup_learner_server(
    config: ServingConfig,
    state_dir: str | Path,
    engine_factory: EngineFactory | None = None,
    cluster: Cluster | None = None,
) -> LearnerServer:
    """A learner server (not started yet) over the runs stored in `state_dir`; with a `cluster`,
    GRPO samples with the sampler workers of the rollout services instead of in process."""
    return LearnerServer(config, state_dir, engine_factory, cluster=cluster)
