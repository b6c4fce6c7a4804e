"""The learner service and its clients.

    skillfactory learner serve --state-dir D [--port 0] [--metrics-port 0] [--token-file F]
    skillfactory submit SPEC.yaml --learner HOST:PORT [--token-file F]
    skillfactory status [RUN] --learner HOST:PORT
    skillfactory watch RUN --learner HOST:PORT
    skillfactory cancel RUN --learner HOST:PORT [--reason TEXT]

`learner serve` prints one ready JSON line on stdout (`{"service", "address", "metrics", "tls",
"auth", "state_dir"}`), logs JSON lines to stderr and stops gracefully on SIGTERM (the running run
stays RUNNING and resumes on the next start over the same state dir). The client commands read the
address from `--learner` or `$SKILLFACTORY_LEARNER` and the token from `--token-file` or
`$SKILLFACTORY_TOKEN`. Exit codes: 0 ok (`watch`: the run succeeded), 1 the run failed or was
cancelled, or the learner could not be reached or answered an error, 2 invalid input (spec, run id).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from skillfactory.cli.data import load_spec_or_exit
from skillfactory.cli.options import (
    ClaimIdleOption,
    RedisUrlOption,
    StreamPrefixOption,
    serve_until_signal,
    serving_options,
)
from skillfactory.cluster.local import ClusterError, ClusterState, cluster_dir
from skillfactory.contracts.runspec_proto import run_spec_to_proto
from skillfactory.models.registry import cache_root
from skillfactory.queue import open_queue
from skillfactory.rollout.scaling import Autoscaler, DeploymentScale, ScalingPolicy, backlog
from skillfactory.run_limits import RunLimits
from skillfactory.runspec import RedisQueueSpec
from skillfactory.serving.logs import setup_logging
from skillfactory.serving.run_policy import RunPolicy
from skillfactory.v1 import learner_pb2, run_pb2

if TYPE_CHECKING:
    import grpc

    from skillfactory.serving.server import ServingConfig
    from skillfactory.v1 import learner_pb2_grpc

LEARNER_ENV = "SKILLFACTORY_LEARNER"
EXIT_FAILED, EXIT_INVALID = 1, 2

learner_app = typer.Typer(
    name="learner", help="The learner service: run controller and API.", no_args_is_help=True
)

LearnerOption = Annotated[
    str | None,
    typer.Option("--learner", help=f"Learner address HOST:PORT; default: ${LEARNER_ENV}."),
]
ClientTokenOption = Annotated[
    Path | None,
    typer.Option(help="File holding the learner's bearer token; default: $SKILLFACTORY_TOKEN."),
]
CaOption = Annotated[
    Path | None, typer.Option(help="PEM CA certificate: connect with TLS, trusting it.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@learner_app.command("serve")
@serving_options("learner")
def serve_learner(
    serving: ServingConfig,
    state_dir: Annotated[Path, typer.Option(help="Folder of the persisted run state.")],
    redis_url: RedisUrlOption = "",
    weights_dir: Annotated[
        Path | None,
        typer.Option(
            help="Weight stores shared with the rollout services (with --redis-url); "
            "default: STATE_DIR/weights."
        ),
    ] = None,
    claim_idle_ms: ClaimIdleOption = 60_000,
    stream_prefix: StreamPrefixOption = "skillfactory",
    composer: Annotated[
        str,
        typer.Option(help="Composer service HOST:PORT for stage 1's traces (with --redis-url)."),
    ] = "",
    data_root: Annotated[
        Path | None,
        typer.Option(
            help="Run specs' output_dir must lie inside this folder (relative ones land in it); "
            "default: the working directory."
        ),
    ] = None,
    model_root: Annotated[
        list[Path] | None,
        typer.Option(help="A folder models may be loaded from besides the data root (repeat)."),
    ] = None,
    dataset_root: Annotated[
        list[Path] | None,
        typer.Option(help="A folder SFT datasets may be read from besides the data root (repeat)."),
    ] = None,
    allow_reward_plugins: Annotated[
        bool,
        typer.Option(
            "--allow-reward-plugins",
            help="Admit run specs whose grpo.rewards name plugins (package.module:function): "
            "code execution, for trusted submitters only. Refused without it.",
        ),
    ] = False,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Run limit: most GRPO steps (grpo.steps).")
    ] = None,
    max_problems: Annotated[
        int | None, typer.Option(min=1, help="Run limit: most problems of any stage.")
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="Run limit: most tokens of a prompt or response (any stage)."),
    ] = None,
    max_samples: Annotated[
        int | None,
        typer.Option(min=1, help="Run limit: most samples per problem (group size included)."),
    ] = None,
    max_epochs: Annotated[
        float | None, typer.Option(min=0.001, help="Run limit: most passes over the data.")
    ] = None,
    max_spec_bytes: Annotated[
        int | None, typer.Option(min=1, help="Run limit: largest serialized run spec.")
    ] = None,
    autoscale_deployment: Annotated[
        str,
        typer.Option(
            help="Scale this rollout Deployment with the queue's backlog through the Kubernetes "
            "API (its scale subresource; with --redis-url); '' leaves it alone."
        ),
    ] = "",
    autoscale_namespace: Annotated[
        str, typer.Option(envvar="POD_NAMESPACE", help="Namespace of that Deployment.")
    ] = "default",
    min_rollouts: Annotated[int, typer.Option(min=0, help="Fewest rollout replicas.")] = 1,
    max_rollouts: Annotated[int, typer.Option(min=1, help="Most rollout replicas.")] = 4,
    tasks_per_replica: Annotated[
        int, typer.Option(min=1, help="Backlog one rollout replica absorbs.")
    ] = 16,
    scale_up_cooldown_s: Annotated[
        float, typer.Option(min=0, help="Seconds after a change before growing again.")
    ] = 60.0,
    scale_down_cooldown_s: Annotated[
        float, typer.Option(min=0, help="Seconds of lower need before shrinking.")
    ] = 600.0,
) -> None:
    """Serve the learner API; runs execute one at a time. With --redis-url, GRPO samples with the
    rollout services' sampler workers over that queue; otherwise everything runs here. Under
    torchrun, rank 0 serves and the other ranks follow it through SFT and the GRPO learner
    (FSDP2): `torchrun --nproc-per-node N -m skillfactory.cli learner serve …`."""
    # heavy: torch and grpc, loaded only when serving
    from skillfactory.serving.composer_client import ComposerClient
    from skillfactory.serving.learner_api import setup_learner_server
    from skillfactory.stages.rollouts import Cluster
    from skillfactory.train.follower import follow
    from skillfactory.train.ranks import join_ranks

    ranks = join_ranks()
    if ranks is not None and not ranks.leads:
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        setup_logging(f"learner-rank{ranks.rank}", level)
        follow(ranks)
        return

    cluster, composer_client = None, None
    if redis_url:
        queue = RedisQueueSpec(
            url=redis_url, claim_idle_ms=claim_idle_ms, stream_prefix=stream_prefix
        )
        if composer:
            composer_client = ComposerClient(
                composer, serving.outgoing_token, tls_ca=serving.tls_ca
            )
        cluster = Cluster(
            queue,
            (weights_dir or state_dir / "weights").resolve(),
            compose=composer_client.compose if composer_client is not None else None,
        )
    try:
        policy = RunPolicy(
            data_root or Path.cwd(),
            model_roots=tuple(model_root or ()) + (cache_root(),),
            dataset_roots=tuple(dataset_root or ()),
            allow_reward_plugins=allow_reward_plugins,
        )
        limits = RunLimits(
            max_steps=max_steps,
            max_problems=max_problems,
            max_tokens=max_tokens,
            max_samples=max_samples,
            max_epochs=max_epochs,
            max_spec_bytes=max_spec_bytes,
        )
        server = setup_learner_server(
            serving, state_dir, cluster=cluster, ranks=ranks, policy=policy, limits=limits
        )
    except (ValueError, OSError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_INVALID) from None
    stop_scaling = threading.Event()
    if autoscale_deployment and cluster is not None:
        scaling = ScalingPolicy(
            min_replicas=min_rollouts,
            max_replicas=max_rollouts,
            tasks_per_replica=tasks_per_replica,
            scale_up_cooldown_s=scale_up_cooldown_s,
            scale_down_cooldown_s=scale_down_cooldown_s,
        )
        scaled = DeploymentScale(autoscale_deployment, autoscale_namespace)
        backlog_queue = open_queue(cluster.queue)
        Autoscaler(scaling, scaled, lambda: backlog(backlog_queue)).start(stop_scaling)
    try:
        serve_until_signal(server, "learner", state_dir=str(state_dir))
    finally:
        stop_scaling.set()
        if ranks is not None:
            ranks.tell("shutdown")
        if composer_client is not None:
            composer_client.close()


# clients -------------------------------------------------------------------------------------


class _Client:
    def __init__(self, learner: str | None, token_file: Path | None, ca: Path | None) -> None:
        # deferred: heavy or optional (grpc)
        import grpc

        # deferred: heavy or optional (torch)
        from skillfactory.serving.auth import TOKEN_ENV, TokenError, bearer_metadata, load_token
        from skillfactory.v1 import learner_pb2_grpc

        local = _local_cluster() if not (learner or os.environ.get(LEARNER_ENV)) else None
        address = learner or os.environ.get(LEARNER_ENV) or (local.learner if local else "")
        if not address:
            typer.echo(
                f"no learner address: pass --learner, set ${LEARNER_ENV} or `skillfactory up`",
                err=True,
            )
            raise typer.Exit(EXIT_INVALID)
        if token_file is None and local is not None and not os.environ.get(TOKEN_ENV):
            token_file = Path(local.token_file)
        try:
            token = load_token(token_file)
        except TokenError as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(EXIT_INVALID) from None
        self.metadata = bearer_metadata(token) if token else ()
        if ca is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
            self.channel = grpc.secure_channel(address, credentials)
        else:
            self.channel = grpc.insecure_channel(address)
        self.stub: learner_pb2_grpc.LearnerStub = learner_pb2_grpc.LearnerStub(self.channel)
        self.address = address

    def call(self, method: str, request: Any, timeout: float | None = 30.0) -> Any:
        # deferred: heavy or optional (grpc)
        import grpc

        try:
            return getattr(self.stub, method)(request, metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as error:
            _exit_on(error, self.address)

    def close(self) -> None:
        self.channel.close()


def _local_cluster() -> Any:
    """The running local cluster of `$SKILLFACTORY_CLUSTER_DIR` (default `.skillfactory/cluster`),
    if any: its learner is the default address and its token the default token."""

    try:
        state = ClusterState.load(cluster_dir(None))
    except (ClusterError, ValueError, OSError):
        return None
    return state if state.ready else None


def _exit_on(error: grpc.RpcError, address: str) -> NoReturn:
    # deferred: heavy or optional (grpc)
    import grpc

    code = error.code()
    details = error.details()
    if code == grpc.StatusCode.UNAVAILABLE:
        typer.echo(f"cannot reach the learner at {address}: {details}", err=True)
    else:
        typer.echo(f"{code.name}: {details}", err=True)
    invalid = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    raise typer.Exit(EXIT_INVALID if code in invalid else EXIT_FAILED)


def _state_name(value: int) -> str:

    return run_pb2.RunState.Name(value).removeprefix("RUN_STATE_")


def status_dict(status: Any) -> dict[str, Any]:
    """A `RunStatus` as plain JSON-ready data."""
    return {
        "run_id": status.run_id,
        "name": status.name,
        "state": _state_name(status.state),
        "current_stage": status.current_stage,
        "policy_version": status.policy_version,
        "message": status.message,
        "stages": {
            s.stage: {"state": _state_name(s.state), "progress": round(s.progress, 3)}
            for s in status.stages
        },
        "created_at": status.created_at.ToJsonString(),
        "updated_at": status.updated_at.ToJsonString(),
    }


def event_line(event: Any) -> str:
    """One line per event: sequence, stage and what happened."""
    where = f"[{event.stage}] " if event.stage else ""
    kind = event.WhichOneof("kind")
    if kind == "state":
        what = f"run {_state_name(event.state)}"
    elif kind == "metrics":
        values = " ".join(f"{k}={v:.4g}" for k, v in sorted(event.metrics.values.items()))
        what = f"step {event.metrics.step}: {values}"
    else:
        what = event.message
    return f"{event.sequence:>5} {event.time.ToJsonString()} {where}{what}"


def submit(
    spec_path: Annotated[Path, typer.Argument(help="Run spec (YAML).", exists=True)],
    learner: LearnerOption = None,
    token_file: ClientTokenOption = None,
    tls_ca: CaOption = None,
) -> None:
    """Submit a run spec to the learner; prints the run id."""

    spec = load_spec_or_exit(spec_path, None)
    client = _Client(learner, token_file, tls_ca)
    try:
        request = learner_pb2.SubmitRunRequest(spec=run_spec_to_proto(spec))
        response = client.call("SubmitRun", request)
    finally:
        client.close()
    typer.echo(response.run_id)


def status(
    run_id: Annotated[str | None, typer.Argument(help="Run id; all runs when left out.")] = None,
    learner: LearnerOption = None,
    token_file: ClientTokenOption = None,
    tls_ca: CaOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one run, or every run the learner has."""

    client = _Client(learner, token_file, tls_ca)
    try:
        if run_id is not None:
            runs = [client.call("GetRun", learner_pb2.GetRunRequest(run_id=run_id))]
        else:
            runs, token = [], ""
            while True:
                page = client.call("ListRuns", learner_pb2.ListRunsRequest(page_token=token))
                runs += list(page.runs)
                token = page.next_page_token
                if not token:
                    break
    finally:
        client.close()
    records = [status_dict(r) for r in runs]
    if as_json:
        typer.echo(json.dumps(records[0] if run_id is not None else records, indent=2))
        return
    for record in records:
        stages = " ".join(
            f"{name}:{s['state'].lower()}({s['progress']:.0%})"
            for name, s in record["stages"].items()
        )
        line = f"{record['run_id']}  {record['name']:<16} {record['state']:<10} {stages}"
        typer.echo(line + (f"  — {record['message']}" if record["message"] else ""))


def watch(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    learner: LearnerOption = None,
    token_file: ClientTokenOption = None,
    tls_ca: CaOption = None,
    after: Annotated[int, typer.Option(min=0, help="Start after this event sequence.")] = 0,
) -> None:
    """Stream a run's events until it ends; exit 0 when it succeeded, 1 otherwise."""

    client = _Client(learner, token_file, tls_ca)
    final = run_pb2.RUN_STATE_UNSPECIFIED
    request = learner_pb2.WatchRunRequest(run_id=run_id, after_sequence=after)
    try:
        # deferred: heavy or optional (grpc)
        import grpc

        try:
            for event in client.stub.WatchRun(request, metadata=client.metadata):
                typer.echo(event_line(event))
                if event.WhichOneof("kind") == "state" and not event.stage:
                    final = event.state
        except grpc.RpcError as error:
            _exit_on(error, client.address)
    finally:
        client.close()
    if final == run_pb2.RUN_STATE_UNSPECIFIED:
        typer.echo("the stream ended before the run did (the learner stopped?)", err=True)
    if final != run_pb2.RUN_STATE_SUCCEEDED:
        raise typer.Exit(EXIT_FAILED)


def cancel(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    learner: LearnerOption = None,
    token_file: ClientTokenOption = None,
    tls_ca: CaOption = None,
    reason: Annotated[str, typer.Option(help="Why; kept in the run's message.")] = "",
) -> None:
    """Cancel a run: a pending one at once, the running one at its next stage event or step."""

    client = _Client(learner, token_file, tls_ca)
    try:
        response = client.call(
            "CancelRun", learner_pb2.CancelRunRequest(run_id=run_id, reason=reason)
        )
    finally:
        client.close()
    typer.echo(f"{response.run_id} {_state_name(response.state)}")


def register(app: typer.Typer) -> None:
    """Add `learner serve` and the client commands `submit`, `status`, `watch`, `cancel`."""
    app.add_typer(learner_app, name="learner")
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("watch")(watch)
    app.command("cancel")(cancel)
