"""The reward service on a real gRPC server on loopback: grading, hostile input, limits, auth,
health, metrics and JSON logs."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from service_records import problem_proto, reward_stub, scored_items

from skillfactory.serving.auth import TokenError, bearer_metadata, load_token
from skillfactory.serving.logs import JsonFormatter, bind_run_id
from skillfactory.serving.reward import SERVICE_NAME
from skillfactory.serving.server import ServiceServer
from skillfactory.tasks import get_task
from skillfactory.v1 import data_pb2, reward_pb2

StartServer = Callable[..., ServiceServer]


def test_scores_a_batch_in_order(start_reward_server: StartServer) -> None:
    server = start_reward_server()
    items = scored_items("countdown-4", 3) + scored_items("multiplication-2", 3, correct=False)
    items += scored_items("multiplication-2", 2, seed=1)
    response = reward_stub(server.address).Score(reward_pb2.ScoreRequest(items=items), timeout=10)
    assert [r.value for r in response.rewards] == [1, 1, 1, 0, 0, 0, 1, 1]
    assert [r.correct for r in response.rewards] == [True] * 3 + [False] * 3 + [True] * 2
    assert all(not r.error for r in response.rewards)
    assert response.rewards[3].answer == "0"


def test_hostile_batch_gets_per_record_results_and_the_service_stays_up(
    start_reward_server: StartServer, tmp_path: Path
) -> None:
    server = start_reward_server(max_message_mb=32)
    countdown = problem_proto(get_task("countdown-4").problems(1)[0])
    sentinel = tmp_path / "executed"
    hostile_answers = [
        "__import__('os').system('true')",
        f"__import__('pathlib').Path({str(sentinel)!r}).touch()",
        "10**10**10",
        "9" * 100_000 + " * " + "9" * 100_000,
        "(" * 50_000 + "1" + ")" * 50_000,
        "x" * 5_000_000,
        "\x00\ud7ff<answer>\u202e",
    ]
    items = [
        reward_pb2.ScoreItem(problem=countdown, response=f"<answer>{a}</answer>")
        for a in hostile_answers
    ]
    missing_numbers = data_pb2.Problem(task="countdown-4", id="m")
    bad = [
        reward_pb2.ScoreItem(problem=data_pb2.Problem(task="no-such-task"), response="<answer>1"),
        reward_pb2.ScoreItem(problem=data_pb2.Problem(), response="<answer>1</answer>"),
        reward_pb2.ScoreItem(problem=missing_numbers, response="<answer>1 + 2</answer>"),
        reward_pb2.ScoreItem(response="<answer>" * 10_000),
    ]
    good = scored_items("countdown-4", 1, seed=3)
    request = reward_pb2.ScoreRequest(items=items + bad + good)

    response = reward_stub(server.address).Score(request, timeout=30)

    rewards = response.rewards
    assert len(rewards) == len(request.items)
    assert all(r.value == 0 and not r.correct for r in rewards[: len(items)])
    assert all(not r.error for r in rewards[: len(items)])  # wrong answers, not errors
    assert "unknown task 'no-such-task'" in rewards[len(items)].error
    assert "no task" in rewards[len(items) + 1].error
    assert "numbers" in rewards[len(items) + 2].error
    assert rewards[len(items) + 3].error
    assert all(r.value == 0 for r in rewards[len(items) : -1])
    assert rewards[-1].value == 1 and rewards[-1].correct and not rewards[-1].error
    assert not sentinel.exists()
    follow_up = reward_stub(server.address).Score(
        reward_pb2.ScoreRequest(items=scored_items("multiplication-3", 2)), timeout=10
    )
    assert [r.value for r in follow_up.rewards] == [1, 1]


def test_an_oversized_request_gets_resource_exhausted(start_reward_server: StartServer) -> None:
    server = start_reward_server(max_message_mb=0.05)
    stub = reward_stub(server.address)
    item = scored_items("countdown-4", 1)[0]
    item.response = "x" * 100_000
    with pytest.raises(grpc.RpcError) as caught:
        stub.Score(reward_pb2.ScoreRequest(items=[item]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (caught.value.details() or "")
    assert len(stub.Score(reward_pb2.ScoreRequest(items=scored_items("countdown-4", 1))).rewards)


def test_a_token_is_required_when_configured_but_not_for_health(
    start_reward_server: StartServer,
) -> None:
    server = start_reward_server(token="s3cret-token")
    stub = reward_stub(server.address)
    request = reward_pb2.ScoreRequest(items=scored_items("countdown-3", 1))
    for metadata in [(), bearer_metadata("wrong"), (("authorization", "s3cret-token"),)]:
        with pytest.raises(grpc.RpcError) as caught:
            stub.Score(request, metadata=metadata, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "bearer token" in (caught.value.details() or "")
    assert (
        stub.Score(request, metadata=bearer_metadata("s3cret-token"), timeout=10).rewards[0].value
    )
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.address))
    status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_health_turns_not_serving_while_the_server_drains(start_reward_server: StartServer) -> None:
    server = start_reward_server(drain_s=1.5)
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.address))

    def status(service: str) -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(health.Check(request, timeout=5).status)

    assert status("") == status(SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
    stopping = threading.Thread(target=server.stop)
    stopping.start()
    time.sleep(0.2)
    assert status("") == status(SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
    # Still serving work while it drains.
    stub = reward_stub(server.address)
    assert stub.Score(reward_pb2.ScoreRequest(items=scored_items("countdown-3", 1)), timeout=5)
    stopping.join(timeout=10)
    with pytest.raises(grpc.RpcError):
        status("")


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_endpoint_exposes_the_series_after_traffic(
    start_reward_server: StartServer,
) -> None:
    server = start_reward_server(token="t0ken")
    stub = reward_stub(server.address)
    items = scored_items("countdown-4", 5) + [
        reward_pb2.ScoreItem(problem=data_pb2.Problem(task="nope"), response="")
    ]
    stub.Score(reward_pb2.ScoreRequest(items=items), metadata=bearer_metadata("t0ken"))
    with pytest.raises(grpc.RpcError):
        stub.Score(reward_pb2.ScoreRequest(items=items))
    assert server.metrics_url is not None

    samples = _scrape(server.metrics_url)

    method = "/skillfactory.v1.RewardService/Score"
    base = (("method", method), ("service", "reward"))
    ok = ("skillfactory_grpc_requests_total", tuple(sorted((*base, ("code", "OK")))))
    denied = ("skillfactory_grpc_requests_total", (*sorted((*base, ("code", "UNAUTHENTICATED"))),))
    assert samples[ok] == 1
    assert samples[denied] == 1
    assert samples[("skillfactory_grpc_request_seconds_count", base)] == 2
    assert samples[("skillfactory_grpc_request_seconds_sum", base)] > 0
    assert samples[("skillfactory_grpc_in_flight", base)] == 0
    graded = ("skillfactory_reward_answers_graded_total", (("task", "countdown-4"),))
    assert samples[graded] == 5
    assert samples[("skillfactory_reward_answers_correct_total", (("task", "countdown-4"),))] == 5
    errors = ("skillfactory_reward_record_errors_total", (("reason", "unknown_task"),))
    assert samples[errors] == 1
    assert samples[("skillfactory_reward_batch_items_count", ())] == 1


def test_two_servers_in_one_process_keep_their_own_metrics(
    start_reward_server: StartServer,
) -> None:
    first, second = start_reward_server(), start_reward_server()
    reward_stub(first.address).Score(reward_pb2.ScoreRequest(items=scored_items("countdown-3", 2)))
    assert first.metrics_url is not None and second.metrics_url is not None
    graded = ("skillfactory_reward_answers_graded_total", (("task", "countdown-3"),))
    assert _scrape(first.metrics_url)[graded] == 2
    assert graded not in _scrape(second.metrics_url)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost and its key, written as PEM files."""
    x509 = pytest.importorskip("cryptography.x509", reason="needs the cryptography package")
    import datetime
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_clients_succeed_and_plaintext_clients_fail(
    start_reward_server: StartServer, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    server = start_reward_server(tls_cert=cert, tls_key=key)
    assert server.ready_info()["tls"] is True
    request = reward_pb2.ScoreRequest(items=scored_items("countdown-3", 1))
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    assert reward_stub(server.address, credentials).Score(request, timeout=10).rewards[0].value == 1
    with pytest.raises(grpc.RpcError) as caught:
        reward_stub(server.address).Score(request, timeout=3)
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_load_token_reads_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKILLFACTORY_TOKEN", raising=False)
    assert load_token() is None
    monkeypatch.setenv("SKILLFACTORY_TOKEN", "from-env")
    assert load_token() == "from-env"
    (tmp_path / "token").write_text("from-file\n")
    assert load_token(tmp_path / "token") == "from-file"
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(TokenError, match="empty"):
        load_token(tmp_path / "empty")
    with pytest.raises(TokenError, match="cannot read"):
        load_token(tmp_path / "missing")


def test_logs_are_json_lines_with_the_run_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("reward"))
    logger = logging.getLogger("test.serving.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.info("before")
    with bind_run_id("run-42"):
        logger.info("graded %d", 3, extra={"items": 3})
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "before" and "run_id" not in first
    assert {"ts", "level", "service", "msg"} <= second.keys()
    assert second["service"] == "reward" and second["level"] == "info"
    assert second["msg"] == "graded 3" and second["run_id"] == "run-42" and second["items"] == 3


def test_problems_sharing_an_id_but_not_their_data_are_graded_apart() -> None:
    from skillfactory.serving.reward import score

    first, second = (problem_proto(p) for p in get_task("countdown-4").problems(2, seed=7))
    second.id = first.id  # same id, other numbers and target
    response = f"<answer>{first.answer}</answer>"
    items = [reward_pb2.ScoreItem(problem=p, response=response) for p in (first, second, first)]
    rewards = score(reward_pb2.ScoreRequest(items=items)).rewards
    assert [r.value for r in rewards] == [1, 0, 1]


def test_groups_are_graded_like_items_and_answered_after_them(
    start_reward_server: StartServer,
) -> None:
    from skillfactory.serving.reward import score_request

    countdown, multiplication = (
        problem_proto(get_task(name).problems(1, seed=2)[0])
        for name in ("countdown-4", "multiplication-2")
    )
    groups = [
        (countdown, [f"<answer>{countdown.answer}</answer>", "<answer>1 + 2</answer>", "none"]),
        (multiplication, ["<answer>0</answer>", f"x <answer>{multiplication.answer}</answer>"]),
    ]
    request = score_request(groups)
    assert [len(group.responses) for group in request.groups] == [3, 2]
    request.items.add(problem=countdown, response=f"<answer>{countdown.answer}</answer>")
    request.items.add(problem=multiplication, response="<answer>1</answer>")
    inline = reward_pb2.ScoreRequest(
        items=[
            reward_pb2.ScoreItem(problem=problem, response=response)
            for problem, responses in groups
            for response in responses
        ]
    )
    stub = reward_stub(start_reward_server().address)

    rewards = stub.Score(request, timeout=10).rewards

    assert [r.value for r in rewards] == [1, 0] + [1, 0, 0, 0, 1]  # items first, then groups
    assert not any(r.error for r in rewards)
    assert list(rewards)[2:] == list(stub.Score(inline, timeout=10).rewards)
    assert not rewards[4].HasField("answer") and rewards[5].answer == "0"


def test_a_group_with_a_bad_problem_gets_an_error_per_response(
    start_reward_server: StartServer,
) -> None:
    server = start_reward_server()
    good = problem_proto(get_task("countdown-3").problems(1)[0])
    right = f"<answer>{good.answer}</answer>"
    request = reward_pb2.ScoreRequest()
    request.groups.add(problem=good, responses=[right, "<answer>1 + 2</answer>"])
    request.groups.add(problem=data_pb2.Problem(task="no-such-task"), responses=[right] * 3)
    request.groups.add(problem=data_pb2.Problem(id="no task"), responses=[right])
    request.groups.add(problem=data_pb2.Problem(task="countdown-3", id="no numbers"))
    request.groups[-1].responses.extend(["<answer>1 + 2</answer>", "no answer"])
    request.groups.add(problem=good)  # no responses: no rewards
    request.groups.add(problem=good, responses=[right])

    rewards = reward_stub(server.address).Score(request, timeout=10).rewards

    assert [r.value for r in rewards] == [1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert [bool(r.error) for r in rewards] == [False] * 2 + [True] * 5 + [False] * 2
    assert all("unknown task 'no-such-task'" in r.error for r in rewards[2:5])
    assert "problem has no task" in rewards[5].error
    assert "numbers" in rewards[6].error
    assert not rewards[7].HasField("answer")  # no answer: wrong, the grader needs no numbers
    assert server.metrics_url is not None
    samples = _scrape(server.metrics_url)
    errors = "skillfactory_reward_record_errors_total"
    assert samples[(errors, (("reason", "unknown_task"),))] == 3
    assert samples[(errors, (("reason", "missing_field"),))] == 2
    graded = ("skillfactory_reward_answers_graded_total", (("task", "countdown-3"),))
    assert samples[graded] == 4
    assert samples[("skillfactory_reward_answers_correct_total", (("task", "countdown-3"),))] == 2
    assert samples[("skillfactory_reward_batch_items_sum", ())] == 9
