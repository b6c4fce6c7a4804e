"""The rollout service as a Ray Serve deployment: autoscaled rollout replicas behind Ray's gRPC proxy.

Each replica builds its own engine (from an engine section shaped like a run spec's `engine` and a
model) and answers the `skillfactory.v1.Rollout` RPCs — `Generate`, `GenerateStream`,
`UpdateWeights`, `GetPolicyVersion` — with the same `RolloutServicer` as `skillfactory serve
rollout`, so requests, answers and error codes are the same. Ray Serve's gRPC proxy routes each call
to a replica (`grpc_servicer_functions` names our generated `add_RolloutServicer_to_server`), and
Serve's autoscaler adds or removes replicas to keep the *ongoing requests* per replica near a target.

Use it with `skillfactory serve rollout-ray --model M` (starts Ray on this machine), with
`serve run skillfactory.serving.ray_rollout:app model=M` on a running Ray cluster (a gRPC proxy
configured as above), or from a KubeRay `RayService` whose `serveConfigV2` names
`import_path: skillfactory.serving.ray_rollout:app` and passes `RayRolloutArgs` as `args`
(docs/ray-rollout.md).

Weights: an `UpdateWeights` call lands on *one* replica. That replica verifies and loads the
notice, then posts it on the weight board of this deployed version of the application (a small
detached Ray actor); every replica checks the board before each request and loads a newer version
first (a replica started by the autoscaler catches up on its first request; a version it cannot
load is not retried until a newer one is posted; a redeployed application starts a new board). So every replica converges to the newest notice, each
completion still carries the version it was sampled with, and `GetPolicyVersion` answers the newest
version the board knows. Versions only go up, as with the plain service.

Differences from the plain service: no sampler workers (replicas answer RPCs only); no Prometheus
endpoint of ours — Ray Serve exports its own request, latency and replica-count metrics; TLS is not
configured here (terminate it in front of the proxy). With a bearer token (`token_file`, else
`$SKILLFACTORY_TOKEN` in the replica's environment) every RPC needs `authorization: Bearer <token>`;
Ray's gRPC proxy listens on all interfaces, so set one wherever the port is reachable.

With one application on the cluster, clients need no routing metadata; with several, they send
`("application", "<name>")` (default name `rollout`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from pydantic import Field, model_validator

from skillfactory.engines.base import Engine
from skillfactory.engines.setup import engine_batch_rows, setup_engine
from skillfactory.engines.simulated import TokenDelayEngine
from skillfactory.runspec import EngineSpec, Spec, TransformersEngineSpec
from skillfactory.serving.logs import bind_run_id
from skillfactory.serving.rollout import RolloutServicer, WeightSyncError
from skillfactory.v1 import data_pb2, rollout_pb2
from skillfactory.wire.messages import InvalidMessage

log = logging.getLogger(__name__)

APP_NAME = "rollout"
"""Default Serve application name (what `skillfactory serve rollout-ray` deploys)."""

DEPLOYMENT_NAME = "Rollout"
"""The deployment's name, as `serve status` and `serveConfigV2.deployments` name it."""

SERVICER_FUNCTION = "skillfactory.v1.rollout_pb2_grpc.add_RolloutServicer_to_server"
"""What Serve's `grpc_options.grpc_servicer_functions` must list."""

BOARD_NAMESPACE = "skillfactory"
"""Ray namespace of the weight boards."""


class RolloutAutoscaling(Spec):
    """How Ray Serve scales the rollout replicas (on ongoing requests per replica).

    Defaults: 1 to 2 replicas, 2 ongoing requests per replica as the target, at most 4 ongoing
    per replica (more wait in the proxy's queue), scale up after 10 s above target, down after
    300 s below it (an engine is slow to build: no flapping), load averaged over 30 s."""

    min_replicas: int = Field(default=1, ge=0)
    """Fewest replicas (0 lets the application scale to zero; the next request waits for one)."""
    max_replicas: int = Field(default=2, ge=1)
    """Most replicas (each takes `num_cpus`/`num_gpus` of the cluster)."""
    target_ongoing_requests: float = Field(default=2.0, gt=0)
    """Ongoing requests per replica the autoscaler aims at. A replica runs one engine call at a
    time, so more than 1 means requests wait there for the engine."""
    max_ongoing_requests: int = Field(default=4, ge=1)
    """Most requests a replica takes at once; must be at least the target."""
    upscale_delay_s: float = Field(default=10.0, ge=0)
    """Seconds the load must stay above target before a replica is added."""
    downscale_delay_s: float = Field(default=300.0, ge=0)
    """Seconds the load must stay below target before a replica is removed."""
    look_back_period_s: float = Field(default=30.0, gt=10.0)
    """Window the ongoing-request counts are averaged over (Ray's default); Ray wants it longer
    than its 10 s metrics interval."""

    @model_validator(mode="after")
    def _consistent(self) -> RolloutAutoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) < min_replicas ({self.min_replicas})"
            )
        if self.max_ongoing_requests < self.target_ongoing_requests:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) < target_ongoing_requests "
                f"({self.target_ongoing_requests})"
            )
        return self

    def ray_config(self) -> dict[str, Any]:
        """Ray Serve's `autoscaling_config` for the deployment."""
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
            "look_back_period_s": self.look_back_period_s,
        }


class RayRolloutArgs(Spec):
    """The application's arguments (`serve run ... key=value`, or `args:` in serveConfigV2)."""

    model: str = Field(min_length=1)
    """Model folder, hub id or registered short name every replica loads."""
    engine: EngineSpec = Field(default_factory=TransformersEngineSpec)
    """Engine section, as in a run spec (`type: transformers` or `type: vllm`)."""
    seed: int = 0
    """Sampling seed of each replica's engine."""
    simulated_token_delay_ms: float = Field(default=0.0, ge=0)
    """SIMULATION for tests and benchmarks: every engine call lasts at least this many ms per
    decode step (`skillfactory.engines.simulated`)."""
    token_file: str | None = None
    """File with the bearer token callers must send (read in each replica); default:
    `$SKILLFACTORY_TOKEN` in the replica's environment, no auth when neither is set."""
    num_cpus: float = Field(default=1.0, ge=0)
    """CPUs each replica reserves in Ray."""
    num_gpus: float = Field(default=0.0, ge=0)
    """GPUs each replica reserves in Ray (1 for a GPU engine)."""
    autoscaling: RolloutAutoscaling = Field(default_factory=RolloutAutoscaling)
    """Replica autoscaling."""


class WeightBoard:
    """The newest weight notice an application's replicas loaded (a detached Ray actor)."""

    def __init__(self) -> None:
        self.version = -1
        self.notice = b""

    def post(self, notice: bytes, version: int) -> int:
        """Keep `notice` when its version is newer; returns the board's version."""
        if version > self.version:
            self.version, self.notice = version, notice
        return self.version

    def latest(self) -> tuple[int, bytes]:
        return self.version, self.notice


def weight_board(app_name: str, code_version: str | None) -> Any:
    """The weight board of one deployed version of application `app_name`, created on first
    use: a redeployed application starts from its model again, not from the weights the
    replicas of its previous version loaded."""
    # deferred: heavy or optional (ray)
    import ray

    return (
        ray.remote(num_cpus=0)(WeightBoard)
        .options(
            name=f"weights-{app_name}-{code_version or 'unversioned'}",
            namespace=BOARD_NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
        )
        .remote()
    )


def build_engine(args: RayRolloutArgs) -> Engine:
    """The engine one replica samples with."""

    engine = setup_engine(args.engine, args.model, seed=args.seed)
    if args.simulated_token_delay_ms > 0:
        return TokenDelayEngine(engine, args.simulated_token_delay_ms / 1000)
    return engine


class RolloutDeployment:
    """One rollout replica: a `RolloutServicer` over its own engine. Methods are named like the
    RPCs and take the request message; Serve passes `grpc_context` (None on handle calls, which
    come from inside the cluster and need no token)."""

    def __init__(self, args: dict[str, Any]) -> None:
        # deferred: heavy or optional (ray)
        from ray import serve

        # deferred: heavy or optional (torch)
        from skillfactory.serving.auth import load_token

        self.args = RayRolloutArgs.model_validate(args)
        token = load_token(self.args.token_file)
        self._expected = f"Bearer {token}".encode() if token else None
        self.servicer = RolloutServicer(
            build_engine(self.args),
            model=self.args.model,
            max_batch_size=engine_batch_rows(self.args.engine),
        )
        context = serve.get_replica_context()
        self.board = weight_board(context.app_name, context.code_version)
        self._unloadable = -1
        """Newest board version this replica failed to load (not retried on every request)."""
        log.info("rollout replica ready", extra={"model": self.args.model})

    # ---- RPCs ---------------------------------------------------------------------------------

    async def Generate(  # noqa: N802 (the RPC's name)
        self, request: rollout_pb2.GenerateRequest, grpc_context: Any = None
    ) -> rollout_pb2.GenerateResponse:
        if not self._authorized(grpc_context):
            return rollout_pb2.GenerateResponse()
        await self._catch_up()
        with bind_run_id(request.run_id or None):
            try:
                return await asyncio.to_thread(self.servicer.generate, request)
            except InvalidMessage as error:
                _fail(grpc_context, grpc.StatusCode.INVALID_ARGUMENT, error)
        return rollout_pb2.GenerateResponse()

    async def GenerateStream(  # noqa: N802
        self, request: rollout_pb2.GenerateRequest, grpc_context: Any = None
    ) -> AsyncIterator[rollout_pb2.PromptCompletions]:
        # A stream ends with the status set on the context only when it raises.
        if not self._authorized(grpc_context):
            raise PermissionError("missing or wrong bearer token")
        await self._catch_up()
        chunks = self.servicer.generate_stream(request)
        while True:
            try:
                message = await asyncio.to_thread(_next_chunk, chunks, request.run_id)
            except InvalidMessage as error:
                _fail(grpc_context, grpc.StatusCode.INVALID_ARGUMENT, error)
                raise
            if message is None:
                return
            yield message

    async def UpdateWeights(  # noqa: N802
        self, request: rollout_pb2.UpdateWeightsRequest, grpc_context: Any = None
    ) -> rollout_pb2.UpdateWeightsResponse:
        if not self._authorized(grpc_context):
            return rollout_pb2.UpdateWeightsResponse()
        update = request.update
        with bind_run_id(update.run_id or None):
            try:
                answer = await asyncio.to_thread(self.servicer.update_weights, update)
            except InvalidMessage as error:
                _fail(grpc_context, grpc.StatusCode.INVALID_ARGUMENT, error)
                return rollout_pb2.UpdateWeightsResponse()
            except WeightSyncError as error:
                log.warning("weight update refused", extra={"error": str(error)})
                _fail(grpc_context, grpc.StatusCode.FAILED_PRECONDITION, error)
                return rollout_pb2.UpdateWeightsResponse()
        if answer.policy_version == update.version:  # verified and loaded here: tell the others
            await self.board.post.remote(update.SerializeToString(), update.version)
        return answer

    async def GetPolicyVersion(  # noqa: N802
        self, request: rollout_pb2.GetPolicyVersionRequest, grpc_context: Any = None
    ) -> rollout_pb2.GetPolicyVersionResponse:
        if not self._authorized(grpc_context):
            return rollout_pb2.GetPolicyVersionResponse()
        await self._catch_up()
        return rollout_pb2.GetPolicyVersionResponse(
            policy_version=self.servicer.engine.policy_version, model=self.servicer.model
        )

    # ---- helpers ------------------------------------------------------------------------------

    async def _catch_up(self) -> None:
        """Load the board's notice first when it is newer than this replica's weights."""
        version, notice = await self.board.latest.remote()
        if version <= max(self.servicer.engine.policy_version, self._unloadable):
            return
        update = data_pb2.WeightUpdate.FromString(notice)
        try:
            await asyncio.to_thread(self.servicer.update_weights, update)
        except (InvalidMessage, WeightSyncError) as error:  # e.g. pruned: wait for a newer one
            self._unloadable = version
            log.warning("cannot catch up", extra={"version": version, "error": str(error)})

    def _authorized(self, grpc_context: Any) -> bool:
        if self._expected is None or grpc_context is None:
            return True
        given = dict(grpc_context.invocation_metadata()).get("authorization", "")
        if hmac.compare_digest(str(given).encode(), self._expected):
            return True
        grpc_context.set_code(grpc.StatusCode.UNAUTHENTICATED)
        grpc_context.set_details("missing or wrong bearer token")
        return False


def _next_chunk(
    chunks: Iterator[rollout_pb2.PromptCompletions], run_id: str
) -> rollout_pb2.PromptCompletions | None:
    """The stream's next prompt (None at the end), computed with the request's run id bound."""
    with bind_run_id(run_id or None):
        return next(chunks, None)


def _fail(grpc_context: Any, code: grpc.StatusCode, error: Exception) -> None:
    """Answer `code` with the error's message (re-raise on a handle call, which has no context)."""
    if grpc_context is None:
        raise error
    grpc_context.set_code(code)
    grpc_context.set_details(str(error))


def build_app(args: RayRolloutArgs | dict[str, Any]) -> Any:
    """The Serve application: the `Rollout` deployment with the asked autoscaling and resources.
    Ray calls it with the `args` of `serve run`/serveConfigV2 (a dict)."""
    # deferred: heavy or optional (ray)
    from ray import serve

    config = RayRolloutArgs.model_validate(args)
    deployment = serve.deployment(
        name=DEPLOYMENT_NAME,
        autoscaling_config=config.autoscaling.ray_config(),
        max_ongoing_requests=config.autoscaling.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
    )(RolloutDeployment)
    return deployment.bind(config.model_dump(mode="json"))


app = build_app
"""The application builder `import_path: skillfactory.serving.ray_rollout:app` names."""


def grpc_options(port: int) -> dict[str, Any]:
    """Serve's `grpc_options` that route the Rollout RPCs through its gRPC proxy on `port`."""
    return {"port": port, "grpc_servicer_functions": [SERVICER_FUNCTION]}
