"""Issue 15, finding 10 (services): one token for every service, so the reward pod, which parses
model output, could submit runs, and any token holder could cancel anyone's run; the reward and
composer clients opened only plaintext channels.

Now a server accepts tokens per caller (`--tokens-dir`: files named ROLE or ROLE.LABEL), each
role may call only its methods (`skillfactory.serving.auth`), a run may be cancelled only by the
token that submitted it or an admin, and the reward and composer clients speak TLS, verifying
the server's certificate against a CA (`--tls-ca`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skillfactory.contracts.runspec_proto import run_spec_to_proto
from skillfactory.engines.base import Completion
from skillfactory.runspec import RunSpec
from skillfactory.serving.auth import (
    SERVICE_ROLES,
    Role,
    TokenError,
    TokenTable,
    allowed_roles,
    bearer_metadata,
)
from skillfactory.serving.composer import setup_composer_server
from skillfactory.serving.composer_client import ComposerClient, ComposerError
from skillfactory.serving.learner_api import setup_learner_server
from skillfactory.serving.reward import setup_reward_server
from skillfactory.serving.reward_client import RewardClient
from skillfactory.serving.run_policy import RunPolicy
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.tasks import get_task
from skillfactory.v1 import (
    composer_pb2,
    learner_pb2,
    learner_pb2_grpc,
    reward_pb2,
    rollout_pb2,
)

sys.path.insert(0, str(Path(__file__).parents[2]))
from support.tls import issue  # noqa: E402

TOKENS = {
    "admin": "t-admin",
    "submitter.alice": "t-alice",
    "submitter.bob": "t-bob",
    "learner": "t-learner",
    "rollout": "t-rollout",
}
SUBMIT_AND_CANCEL = ("/skillfactory.v1.Learner/SubmitRun", "/skillfactory.v1.Learner/CancelRun")


def tokens_dir(tmp_path: Path, names: tuple[str, ...] = tuple(TOKENS)) -> Path:
    folder = tmp_path / "tokens"
    folder.mkdir()
    for name in names:
        (folder / name).write_text(TOKENS[name] + "\n")
    (folder / "..data").mkdir()  # what a mounted Secret volume holds besides its keys
    return folder


def auth(name: str) -> Any:
    return bearer_metadata(TOKENS[name])


def test_every_service_is_in_the_role_table_and_services_cannot_submit_or_cancel() -> None:
    modules = (composer_pb2, learner_pb2, reward_pb2, rollout_pb2)
    services = {s.full_name for m in modules for s in m.DESCRIPTOR.services_by_name.values()}
    assert services == set(SERVICE_ROLES)
    for method in SUBMIT_AND_CANCEL:
        assert allowed_roles(method) == {Role.ADMIN, Role.SUBMITTER}
    assert Role.SUBMITTER not in allowed_roles("/skillfactory.v1.RewardService/Score")
    assert Role.SUBMITTER not in allowed_roles("/skillfactory.v1.Composer/Compose")
    assert allowed_roles("/skillfactory.v1.Rollout/UpdateWeights") == {Role.ADMIN, Role.LEARNER}
    assert allowed_roles("/other.Service/Method") == {Role.ADMIN}


def test_a_tokens_folder_names_its_callers(tmp_path: Path) -> None:
    table = TokenTable.from_dir(tokens_dir(tmp_path))
    assert sorted(table.names()) == sorted(TOKENS)
    caller = table.caller(b"Bearer t-alice")
    assert caller is not None and caller.name == "submitter.alice"
    assert caller.role is Role.SUBMITTER
    assert table.caller(b"Bearer t-nobody") is None
    (tmp_path / "tokens" / "root").write_text("x")
    with pytest.raises(TokenError, match="unknown role 'root'"):
        TokenTable.from_dir(tmp_path / "tokens")
    with pytest.raises(TokenError, match="share one token"):
        TokenTable.admin("same") + TokenTable.admin("same")


@pytest.fixture
def learner(tmp_path: Path) -> Iterator[ServiceServer]:
    """A learner accepting every token of TOKENS, its run controller not started (the runs only
    need to exist: they stay PENDING)."""
    config = ServingConfig(tokens=TokenTable.from_dir(tokens_dir(tmp_path)), linger_s=0.0)
    server = setup_learner_server(config, tmp_path / "state", policy=RunPolicy(tmp_path))
    ServiceServer.start(server)
    yield server
    server.controller.close()
    ServiceServer.stop(server, grace_s=0)


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()  # type: ignore[attr-defined,no-any-return]


def test_service_tokens_cannot_submit_and_only_the_submitter_or_an_admin_cancels(
    learner: ServiceServer,
) -> None:
    stub = learner_pb2_grpc.LearnerStub(grpc.insecure_channel(learner.address))
    spec = run_spec_to_proto(RunSpec(name="r", model="HuggingFaceTB/SmolLM2-135M"))
    submit = learner_pb2.SubmitRunRequest(spec=spec)

    for service in ("learner", "rollout"):
        assert code_of(lambda s=service: stub.SubmitRun(submit, metadata=auth(s), timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    assert code_of(lambda: stub.SubmitRun(submit, metadata=bearer_metadata("x"), timeout=5)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )

    alices = stub.SubmitRun(submit, metadata=auth("submitter.alice"), timeout=5).run_id
    bobs = stub.SubmitRun(submit, metadata=auth("submitter.bob"), timeout=5).run_id

    def cancel(run_id: str, who: str) -> Any:
        request = learner_pb2.CancelRunRequest(run_id=run_id)
        return stub.CancelRun(request, metadata=auth(who), timeout=5)

    assert code_of(lambda: cancel(alices, "submitter.bob")) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: cancel(alices, "rollout")) == grpc.StatusCode.PERMISSION_DENIED
    get = learner_pb2.GetRunRequest(run_id=alices)
    assert stub.GetRun(get, metadata=auth("submitter.bob"), timeout=5).state == 1  # PENDING
    assert cancel(alices, "submitter.alice").message == "cancelled by request"
    assert cancel(bobs, "admin").message == "cancelled by request"
    # The submitter is kept with the run, so ownership survives a learner restart.
    assert learner.controller.get(alices).submitter == "submitter.alice"  # type: ignore[attr-defined]


def test_reward_accepts_the_rollout_token_and_refuses_the_submitters(tmp_path: Path) -> None:
    names = ("rollout", "submitter.alice")
    config = ServingConfig(tokens=TokenTable.from_dir(tokens_dir(tmp_path, names)), linger_s=0.0)
    server = setup_reward_server(config)
    server.start()
    try:
        problem = get_task("countdown-3").problems(1, seed=0)[0]
        completion = Completion(f"<answer>{problem.answer}</answer>", [], [], "stop", 0)
        scored = RewardClient(server.address, token=TOKENS["rollout"])
        assert scored([(problem, [completion])]) == [[1.0]]
        refused = RewardClient(server.address, token=TOKENS["submitter.alice"])
        assert code_of(lambda: refused([(problem, [completion])])) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    finally:
        server.stop(grace_s=0)


def test_reward_and_composer_clients_verify_the_servers_certificate(tmp_path: Path) -> None:
    issued = issue(tmp_path / "pki")
    stranger = issue(tmp_path / "other-pki")  # a CA that did not sign the server's certificate
    tls = {"tls_cert": issued.cert, "tls_key": issued.key, "linger_s": 0.0, "health_port": 0}
    reward = setup_reward_server(ServingConfig(token=TOKENS["admin"], **tls))
    composer = setup_composer_server(ServingConfig(token=TOKENS["admin"], **tls), tmp_path)
    reward.start()
    composer.start()
    try:
        problem = get_task("countdown-3").problems(1, seed=0)[0]
        completion = Completion(f"<answer>{problem.answer}</answer>", [], [], "stop", 0)
        address = f"localhost:{reward.port}"
        assert RewardClient(address, token=TOKENS["admin"], tls_ca=issued.ca)(
            [(problem, [completion])]
        ) == [[1.0]]
        for ca in (None, stranger.ca):
            client = RewardClient(address, token=TOKENS["admin"], tls_ca=ca, timeout_s=3)
            assert code_of(lambda c=client: c([(problem, [completion])])) in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )

        trusted = ComposerClient(f"localhost:{composer.port}", TOKENS["admin"], tls_ca=issued.ca)
        assert trusted._call(composer_pb2.ComposeRequest(seed=1)).summary.traces_out == 0
        for ca in (None, stranger.ca):
            client = ComposerClient(
                f"localhost:{composer.port}", TOKENS["admin"], tls_ca=ca, timeout_s=3
            )
            with pytest.raises(ComposerError):
                client._call(composer_pb2.ComposeRequest(seed=1))

        # Probes speak no TLS: the health port answers in plaintext, the service port does not.
        for server in (reward, composer):
            assert server.health_port is not None
            plain = grpc.insecure_channel(f"127.0.0.1:{server.health_port}")
            status = health_pb2_grpc.HealthStub(plain).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            service_port = grpc.insecure_channel(f"127.0.0.1:{server.port}")
            assert code_of(
                lambda c=service_port: health_pb2_grpc.HealthStub(c).Check(
                    health_pb2.HealthCheckRequest(), timeout=3
                )
            ) in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        reward.stop(grace_s=0)
        composer.stop(grace_s=0)
