"""The learner service's run controller: queues, executes, cancels and records runs.

Runs execute one at a time, in order of submission, on a background thread that runs the
`Pipeline` (data → sft → grpo → eval). Every event the pipeline emits becomes a `RunEventRecord`:

- a stage started / finished → a `message` event ("started", "finished in N s") on that stage;
- stage-1 progress, a GRPO step and an eval task → a `metrics` event with the numeric fields (eval
  values are keyed `<model>/<task>/<metric>`; a GRPO step's `step` is the policy version);
- run state changes (RUNNING, then SUCCEEDED / FAILED / CANCELLED) → a `state` event with no
  stage; the terminal one is always the last event of a run.

Cancellation is cooperative: `cancel` on a pending run cancels it at once; on the running run it
sets a flag that the controller checks each time the pipeline reports an event and then raises out
of the event callback, so the stage's own cleanup (engine close, sampler stop) runs. A stage that
reports nothing for a while (SFT trains without events) is cancelled when it finishes. Checkpoints
already written stay, so resubmitting the same spec resumes.

Run state lives in a `RunStore` under the state directory. A controller that starts over a state
directory resumes the run that was RUNNING when the last one died (the pipeline resumes from its
own checkpoints), then the PENDING ones. `close` interrupts the running run the same way as a
cancel but leaves it RUNNING, so the next start resumes it.
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

from skillfactory.engines.base import Engine
from skillfactory.runspec import RunSpec, parse_run_spec
from skillfactory.serving.learner_metrics import LearnerMetrics
from skillfactory.serving.logs import bind_run_id
from skillfactory.serving.run_policy import RunPolicy, admit
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
from skillfactory.stages.events import (
    DataProgress,
    EvalTaskDone,
    GRPOStep,
    StageEvent,
    StageFinished,
    StageStarted,
)
from skillfactory.stages.pipeline import Pipeline, effective_spec, stages_to_run
from skillfactory.stages.rollouts import Cluster
from skillfactory.train.ranks import RankGroup

log = logging.getLogger(__name__)

EngineFactory = Callable[[str], Engine]


class RunNotFound(KeyError):
    """No run with this id."""


class _Cancelled(Exception):
    """Raised from the event callback to stop a run that was cancelled."""


class _Interrupted(Exception):
    """Raised from the event callback when the learner shuts down (the run stays RUNNING)."""


def event_fields(event: StageEvent) -> dict[str, Any]:
    """The flat fields of an event, as run events store them (`event` names its kind)."""
    if isinstance(event, StageStarted):
        return {"event": "started"}
    if isinstance(event, StageFinished):
        return {"event": "finished", "seconds": event.seconds}
    if isinstance(event, DataProgress):
        return {"event": "progress", "done": event.done, "total": event.total}
    if isinstance(event, GRPOStep):
        return {"event": "step", **event.record.to_json()}
    return {"event": "task", "model": event.model, "task": event.task, **event.metrics}


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
        ranks: RankGroup | None = None,
        policy: RunPolicy | None = None,
    ) -> None:
        self.store = RunStore(state_dir)
        self.policy = policy or RunPolicy(Path.cwd())
        """What submitted specs may name (paths inside its roots); see `run_policy.admit`."""
        self.engine_factory = engine_factory
        self.cluster = cluster
        self.ranks = ranks
        self.metrics = metrics
        self._cond = threading.Condition()
        self._runs: dict[str, RunRecord] = {}
        self._queue: deque[str] = deque()
        self._cancel: dict[str, str] = {}
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
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

    def submit(self, spec: RunSpec, submitter: str = "") -> RunRecord:
        """Queue a run of `spec` as the policy admits it (`InvalidRunSpec` when it does not);
        `submitter` names the caller (`skillfactory.serving.auth`), who may cancel it."""
        run_id = uuid.uuid4().hex[:12]
        spec = admit(spec, self.policy, run_id)
        stages: dict[str, StageRecord] = {
            stage: StageRecord() for stage in stages_to_run(effective_spec(spec))
        }
        record = RunRecord(
            run_id=run_id,
            name=spec.name,
            spec=spec.model_dump(mode="json"),
            stages=stages,
            submitter=submitter,
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
                on_event=lambda event: self._on_event(record, event),
                cluster=self.cluster,
                ranks=self.ranks,
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

    def _on_event(self, record: RunRecord, event: StageEvent) -> None:
        if self.closing:
            raise _Interrupted
        if record.run_id in self._cancel:
            raise _Cancelled
        with self._cond:
            status = record.stages.setdefault(event.stage, StageRecord())
            fields = event_fields(event)
            data = _scalars(fields)
            if isinstance(event, StageStarted):
                status.state, status.started_at, status.progress = RUNNING, time.time(), 0.0
                record.current_stage = event.stage
                if self.metrics is not None:
                    self.metrics.set_stage(event.stage)
                self._emit(record, event.stage, "message", "started", data=data)
            elif isinstance(event, StageFinished):
                status.state, status.finished_at, status.progress = SUCCEEDED, time.time(), 1.0
                message = f"finished in {event.seconds} s"
                self._emit(record, event.stage, "message", message, data=data)
            elif isinstance(event, GRPOStep):
                self._on_step(record, status, event, data)
            elif isinstance(event, DataProgress):
                status.progress = event.done / event.total if event.total else 0.0
                values = _numbers(fields)
                self._emit(record, event.stage, "metrics", values, step=event.done, data=data)
            elif isinstance(event, EvalTaskDone):
                values = _numbers(fields, f"{event.model}/{event.task}/")
                self._emit(record, event.stage, "metrics", values, data=data)
            self.store.save_status(record)

    def _on_step(
        self, record: RunRecord, status: StageRecord, event: GRPOStep, data: dict[str, Any]
    ) -> None:
        version = event.record.version
        steps = int(record.spec.get("grpo", {}).get("steps", 0)) or 1
        status.progress = min(1.0, version / steps)
        record.policy_version = version
        if self.metrics is not None:
            self.metrics.on_step(event.record)
        values = _numbers(event_fields(event))
        self._emit(record, event.stage, "metrics", values, step=version, data=data)

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
        self.metrics.set_run_counts(counts)
