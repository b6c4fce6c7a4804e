"""The learner service: the learner API over a run controller.

`SubmitRun` validates the protobuf `RunSpec` (converted to the pydantic spec with
`run_spec_from_proto`; an invalid spec gets INVALID_ARGUMENT naming each bad field path) and
queues the run with the `RunController` (`skillfactory.serving.run_controller`), which executes
runs one at a time. `WatchRun` streams the events after `after_sequence` (so a late watcher gets
the events so far, then live ones) and ends after the terminal event. Unknown run ids get
NOT_FOUND. `CancelRun` asks the controller to cancel; only the caller that submitted the run (the
same token, `skillfactory.serving.auth`) or an admin may (PERMISSION_DENIED otherwise). A spec over
the service's run limits (`skillfactory.run_limits`) gets INVALID_ARGUMENT naming the field.

The learner's series are `skillfactory.serving.learner_metrics`. With a `Cluster`, GRPO samples
with the rollout services' sampler workers over the shared queue
(`skillfactory.stages.rollouts.RemoteRollouts`) and stage 1 composes with the composer service.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
from google.protobuf import timestamp_pb2

from skillfactory.contracts.runspec_proto import run_spec_from_proto
from skillfactory.run_limits import RunLimits, check_run_limits
from skillfactory.runspec import InvalidRunSpec
from skillfactory.serving.auth import current_caller, may_cancel
from skillfactory.serving.learner_metrics import LearnerMetrics
from skillfactory.serving.run_controller import EngineFactory, RunController, RunNotFound
from skillfactory.serving.run_policy import RunPolicy
from skillfactory.serving.run_store import RunEventRecord, RunRecord
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.stages.rollouts import Cluster
from skillfactory.train.ranks import RankGroup
from skillfactory.v1 import learner_pb2, learner_pb2_grpc, run_pb2

SERVICE_NAME = "skillfactory.v1.Learner"
"""Fully qualified service name, as the health service reports it."""

DEFAULT_PAGE_SIZE = 100


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

    def __init__(self, controller: RunController, limits: RunLimits | None = None) -> None:
        self.controller = controller
        self.limits = limits or RunLimits()

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
        caller = current_caller()
        try:
            spec = run_spec_from_proto(request.spec)
            check_run_limits(spec, self.limits, request.spec.ByteSize())
            record = self.controller.submit(spec, submitter=caller.name if caller else "")
        except InvalidRunSpec as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
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
        record = self._get(request.run_id, context)
        if not may_cancel(current_caller(), record.submitter):
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"run {request.run_id!r} was submitted by another caller: only it or an admin "
                "may cancel it",
            )
        return status_proto(self.controller.cancel(request.run_id, request.reason))

    def WatchRun(  # noqa: N802
        self, request: learner_pb2.WatchRunRequest, context: grpc.ServicerContext
    ) -> Iterator[run_pb2.RunEvent]:
        self._get(request.run_id, context)
        for event in self.controller.watch(
            request.run_id, int(request.after_sequence), context.is_active
        ):
            yield event_proto(request.run_id, event)

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
        ranks: RankGroup | None = None,
        policy: RunPolicy | None = None,
        limits: RunLimits | None = None,
    ) -> None:
        super().__init__("learner", config)
        self.run_stop_timeout_s = run_stop_timeout_s
        self.controller = RunController(
            state_dir,
            engine_factory,
            LearnerMetrics(self.metrics.registry),
            cluster,
            ranks,
            policy,
        )
        self.servicer = LearnerServicer(self.controller, limits)
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
    ranks: RankGroup | None = None,
    policy: RunPolicy | None = None,
    limits: RunLimits | None = None,
) -> LearnerServer:
    """A learner server (not started yet) over the runs stored in `state_dir`; with a `cluster`,
    GRPO samples with the sampler workers of the rollout services instead of in process; with
    `ranks` (rank 0 of a torchrun learner), SFT and GRPO bring the other ranks along; `limits`
    bound what a submitted spec may ask for (`skillfactory.run_limits`)."""
    return LearnerServer(
        config,
        state_dir,
        engine_factory,
        cluster=cluster,
        ranks=ranks,
        policy=policy,
        limits=limits,
    )
