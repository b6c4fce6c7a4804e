"""The composer service on a real gRPC server on loopback, and `skillfactory serve composer` as a
real process: traces equal to the library's, the dataset written under the data root, bad input
counted or refused, metrics, health, JSON logs with the run id, and a graceful SIGTERM."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from service_records import problem_proto

from skillfactory.compose import ComposeOptions, compose, dump_record, parse_samples_record
from skillfactory.serving.composer import SERVICE_NAME, setup_composer_server
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.tasks import Problem, get_task
from skillfactory.v1 import composer_pb2, composer_pb2_grpc, data_pb2

StartServer = Callable[..., ServiceServer]
VERDICT_WORDS = ("Correct", "Incorrect", "Maybe", None)
"""Reflection endings: the two verdicts, an odd one and none (so the filter drops some)."""


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


@pytest.fixture
def start_server(store: Path) -> Iterator[StartServer]:
    """Starts composer servers (data root `store` unless given); stops them at the end."""
    servers: list[ServiceServer] = []

    def start(data_root: Path | None = store, **fields: Any) -> ServiceServer:
        config = ServingConfig(**{"grace_s": 1.0, "linger_s": 0.0, **fields})
        server = setup_composer_server(config, data_root)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(grace_s=0)


def _stub(address: str) -> Any:
    return composer_pb2_grpc.ComposerStub(grpc.insecure_channel(address))


def _samples_record(problem: Problem, rng: random.Random, n: int = 8) -> dict[str, Any]:
    """A composer input record (the JSONL form) with `n` graded samples, 2 reflections each."""
    samples = []
    for index in range(n):
        correct = rng.random() < 0.5
        answer = problem.answer if correct else "1 + 1"
        reflections = []
        for number in range(2):
            word = rng.choice(VERDICT_WORDS)
            ending = f"<verdict>{word}</verdict>" if word else "I cannot tell."
            reflections.append({"text": f"Check {number} of attempt {index}. {ending}"})
        samples.append(
            {
                "text": f"Attempt {index}: let me compute.\n<answer>{answer}</answer>",
                "prompt_variant": rng.choice(["plain", "plan", "alternatives"]),
                "correct": correct,
                "reflections": reflections,
            }
        )
    return {
        "id": problem.id,
        "task": problem.task,
        "question": problem.question,
        "answer": problem.answer,
        **problem.data,
        "samples": samples,
    }


def _to_proto(record: dict[str, Any], problem: Problem, set_verdicts: bool) -> Any:
    """The same record as a `ProblemSamples` message; with `set_verdicts` the verdict field is
    filled (as the text says) rather than left for the server to parse."""
    parsed = parse_samples_record(record, 1)
    message = data_pb2.ProblemSamples(problem=problem_proto(problem))
    for sample in parsed.samples:
        reflections = []
        for reflection in sample.reflections:
            verdict = data_pb2.VERDICT_UNSPECIFIED
            if set_verdicts and reflection.verdict is not None:
                verdict = (
                    data_pb2.VERDICT_CORRECT if reflection.verdict else data_pb2.VERDICT_INCORRECT
                )
            reflections.append(data_pb2.Reflection(text=reflection.text, verdict=verdict))
        message.samples.add(
            text=sample.text,
            prompt_variant=sample.prompt_variant,
            correct=sample.correct,
            reflections=reflections,
        )
    return message


def _batch(n: int = 12, seed: int = 0) -> tuple[list[dict[str, Any]], list[Any]]:
    """`n` countdown problems as input records and as messages (half with verdicts set)."""
    rng = random.Random(seed)
    records, messages = [], []
    for number, problem in enumerate(get_task("countdown-3").problems(n, seed=seed)):
        record = _samples_record(problem, rng)
        records.append(record)
        messages.append(_to_proto(record, problem, set_verdicts=number % 2 == 1))
    return records, messages


def _library(records: list[dict[str, Any]], options: ComposeOptions) -> tuple[list[Any], Any]:
    items = [parse_samples_record(record, line) for line, record in enumerate(records, 1)]
    summary = options.new_summary()
    return list(compose(items, options, summary)), summary


def _as_tuples(traces: Any) -> list[tuple[Any, ...]]:
    return [
        (t.id, [(m.role, m.content) for m in t.messages], t.n_correct, t.n_incorrect, t.variant)
        for t in traces
    ]


def _record_tuples(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            r["id"],
            [(m["role"], m["content"]) for m in r["messages"]],
            r["meta"]["n_correct"],
            r["meta"]["n_incorrect"],
            r["meta"]["variant"],
        )
        for r in records
    ]


def _class_counts(counts: Any) -> composer_pb2.FilterClassCounts:
    return composer_pb2.FilterClassCounts(
        kept=counts.kept,
        dropped_mismatch=counts.dropped_mismatch,
        dropped_no_verdict=counts.dropped_no_verdict,
        dropped_malformed=counts.dropped_malformed,
    )


@pytest.mark.parametrize("variant", ["skillfactory", "no-sample-order", "star"])
def test_compose_gives_the_library_traces_and_writes_the_dataset(
    start_server: StartServer, store: Path, variant: str
) -> None:
    records, messages = _batch()
    request = composer_pb2.ComposeRequest(
        run_id="run-1",
        problems=messages,
        seed=7,
        variant=variant,
        max_samples_per_trace=4,
        output_uri="runs/run-1/data/sft.jsonl",
    )
    response = _stub(start_server().address).Compose(request, timeout=30)

    expected, summary = _library(records, ComposeOptions(variant, 7, 4))
    assert expected, "the batch must compose some traces"
    assert _as_tuples(response.traces) == _record_tuples(expected)
    assert response.summary == composer_pb2.ComposeSummary(
        problems_in=summary.problems_in,
        problems_without_correct=summary.problems_without_correct,
        pairs_kept_correct=summary.filter.correct.kept,
        pairs_kept_incorrect=summary.filter.incorrect.kept,
        pairs_dropped_correct=summary.filter.correct.dropped,
        pairs_dropped_incorrect=summary.filter.incorrect.dropped,
        traces_out=len(expected),
        problems_without_trace=summary.problems_without_trace,
        samples_in=summary.samples_in,
        samples_correct=summary.samples_correct,
        samples_unusable=summary.filter.unusable_samples,
        filter_correct=_class_counts(summary.filter.correct),
        filter_incorrect=_class_counts(summary.filter.incorrect),
        trace_lengths=dict(summary.trace_lengths),
    )
    written = store / "runs" / "run-1" / "data" / "sft.jsonl"
    assert response.output_uri == f"file://{written.resolve()}"
    text = written.read_text(encoding="utf-8")
    assert text == "".join(dump_record(record) + "\n" for record in expected)  # stage 1's bytes
    assert [json.loads(line) for line in text.splitlines()] == expected
    assert sorted(p.name for p in written.parent.iterdir()) == ["sft.jsonl"]  # no partial left


def test_the_seed_decides_the_traces_and_a_rewrite_replaces_the_file(
    start_server: StartServer, store: Path
) -> None:
    _, messages = _batch()
    stub = _stub(start_server().address)
    uri = f"file://{store}/sft.jsonl"
    first = stub.Compose(composer_pb2.ComposeRequest(problems=messages, seed=1, output_uri=uri))
    again = stub.Compose(composer_pb2.ComposeRequest(problems=messages, seed=1))
    other = stub.Compose(composer_pb2.ComposeRequest(problems=messages, seed=2, output_uri=uri))
    assert _as_tuples(first.traces) == _as_tuples(again.traces) and not again.output_uri
    assert _as_tuples(first.traces) != _as_tuples(other.traces)
    lines = (store / "sft.jsonl").read_text().splitlines()
    assert [json.loads(line)["messages"][1]["content"] for line in lines] == [
        t.messages[1].content for t in other.traces
    ]


def test_problems_without_samples_or_a_correct_sample_are_counted_not_failed(
    start_server: StartServer,
) -> None:
    good, all_wrong, empty = get_task("countdown-3").problems(3, seed=5)
    rng = random.Random(0)
    record = _samples_record(good, rng)
    record["samples"][0]["correct"] = True
    record["samples"][0]["reflections"] = [{"text": "Fine. <verdict>Correct</verdict>"}]
    wrong = _samples_record(all_wrong, rng)
    for sample in wrong["samples"]:
        sample["correct"] = False
    messages = [
        _to_proto(record, good, set_verdicts=False),
        _to_proto(wrong, all_wrong, set_verdicts=False),
        data_pb2.ProblemSamples(problem=problem_proto(empty)),
        data_pb2.ProblemSamples(),  # not even a problem
    ]
    response = _stub(start_server().address).Compose(
        composer_pb2.ComposeRequest(problems=messages, seed=3), timeout=30
    )
    summary = response.summary
    assert summary.problems_in == 4 and summary.problems_without_correct == 3
    assert summary.traces_out == len(response.traces) >= 1
    assert all(trace.id.startswith(f"{good.id}/") for trace in response.traces)
    assert summary.pairs_kept_correct >= 1 and summary.pairs_kept_incorrect >= 1


@pytest.mark.parametrize(
    "uri",
    [
        "../outside.jsonl",
        "runs/../../outside.jsonl",
        "/tmp/skillfactory-composer-outside.jsonl",
        "file:///tmp/skillfactory-composer-outside.jsonl",
        "link/sft.jsonl",  # a symlink inside the root that points outside
        ".",
        "runs",  # an existing directory
        "s3://bucket/sft.jsonl",
    ],
)
def test_an_output_uri_outside_the_data_root_is_refused(
    start_server: StartServer, store: Path, tmp_path: Path, uri: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store / "link").symlink_to(outside)
    (store / "runs").mkdir()
    _, messages = _batch(2)
    with pytest.raises(grpc.RpcError) as refused:
        _stub(start_server().address).Compose(
            composer_pb2.ComposeRequest(problems=messages, output_uri=uri), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("output_uri:")
    assert not list(outside.iterdir()) and not (tmp_path / "outside.jsonl").exists()
    assert not Path("/tmp/skillfactory-composer-outside.jsonl").exists()


def test_bad_options_and_a_server_without_a_data_root_are_refused(
    start_server: StartServer,
) -> None:
    _, messages = _batch(2)
    stub = _stub(start_server().address)
    bad = {
        "variant": composer_pb2.ComposeRequest(problems=messages, variant="no-such-variant"),
        "max_samples_per_trace": composer_pb2.ComposeRequest(max_samples_per_trace=-1),
    }
    for field, request in bad.items():
        with pytest.raises(grpc.RpcError) as refused:
            stub.Compose(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith(f"{field}:")
    rootless = _stub(start_server(data_root=None).address)
    assert rootless.Compose(composer_pb2.ComposeRequest(problems=messages), timeout=10).summary
    with pytest.raises(grpc.RpcError) as refused:
        rootless.Compose(composer_pb2.ComposeRequest(output_uri="sft.jsonl"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output_uri" in refused.value.details()


def test_a_request_over_the_size_limit_is_refused(start_server: StartServer) -> None:
    server = start_server(max_message_mb=1)
    problem = data_pb2.Problem(id="big", task="countdown-3", question="x" * (2 * 1024 * 1024))
    request = composer_pb2.ComposeRequest(problems=[data_pb2.ProblemSamples(problem=problem)])
    with pytest.raises(grpc.RpcError) as refused:
        _stub(server.address).Compose(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _stub(server.address).Compose(composer_pb2.ComposeRequest(), timeout=10)  # still up


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_and_health(start_server: StartServer) -> None:
    server = start_server()
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.address))
    for name in ("", SERVICE_NAME):
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    _, messages = _batch()
    response = _stub(server.address).Compose(composer_pb2.ComposeRequest(problems=messages))
    assert server.metrics_url is not None
    series = _scrape(server.metrics_url)
    assert series[("skillfactory_composer_traces_composed_total", ())] == len(response.traces) > 0
    assert series[("skillfactory_composer_requests_total", ())] == 1
    assert series[("skillfactory_composer_problems_total", ())] == len(messages)
    assert series[("skillfactory_composer_compose_seconds_count", ())] == 1
    dropped = response.summary.pairs_dropped_correct + response.summary.pairs_dropped_incorrect
    reasons = ("mismatch", "no_verdict", "malformed")
    assert dropped > 0
    assert (
        sum(
            series[("skillfactory_composer_pairs_dropped_total", (("reason", r),))] for r in reasons
        )
        == dropped
    )


def _serve_composer(data_root: Path, stderr: Path, *options: str) -> subprocess.Popen[str]:
    command = [
        str(Path(sys.executable).with_name("skillfactory")), "serve", "composer", "--port", "0",
        "--metrics-port", "0", "--data-root", str(data_root), "--grace-seconds", "5", *options,
    ]  # fmt: skip
    with stderr.open("w") as sink:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, text=True)


def test_the_cli_process_serves_logs_the_run_id_and_exits_zero_on_sigterm(
    store: Path, tmp_path: Path
) -> None:
    stderr = tmp_path / "stderr"
    process = _serve_composer(store, stderr)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, stderr.read_text()
        ready = json.loads(line)
        assert ready["service"] == "composer" and ready["address"].startswith("127.0.0.1:")
        assert ready["data_root"] == str(store.resolve()) and ready["metrics"].startswith("http")
        _, messages = _batch(4)
        request = composer_pb2.ComposeRequest(
            run_id="run-cli", problems=messages, output_uri="run-cli/sft.jsonl"
        )
        response = _stub(ready["address"]).Compose(request, timeout=30)
        written = (store / "run-cli" / "sft.jsonl").read_text().splitlines()
        assert len(written) == len(response.traces) > 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    logs = [json.loads(line) for line in stderr.read_text().splitlines()]
    assert all(entry["service"] == "composer" for entry in logs)
    composed = [entry for entry in logs if entry["msg"] == "composed"]
    assert composed and composed[0]["run_id"] == "run-cli"
    assert composed[0]["traces"] == len(response.traces)
    messages_logged = [entry["msg"] for entry in logs]
    assert messages_logged.index("shutting down") < messages_logged.index("stopped")


def test_the_service_entrypoint_and_a_missing_data_root(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    entry = subprocess.run(
        [sys.executable, str(root / "services" / "composer"), "--help"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert entry.returncode == 0 and "--data-root" in entry.stdout
    stderr = tmp_path / "stderr"
    process = _serve_composer(tmp_path / "missing", stderr)
    assert process.wait(timeout=30) == 2
    assert process.stdout is not None and process.stdout.read() == ""
    process.stdout.close()
    assert "not a directory" in stderr.read_text()


def test_a_set_verdict_field_is_used_and_an_unset_one_is_read_from_the_text(
    start_server: StartServer,
) -> None:
    problem = get_task("countdown-3").problems(1, seed=9)[0]
    message = data_pb2.ProblemSamples(problem=problem_proto(problem))
    reflections = [
        data_pb2.Reflection(text="Looks right.", verdict=data_pb2.VERDICT_CORRECT),
        data_pb2.Reflection(text="Also fine. <verdict>Correct</verdict>"),
        data_pb2.Reflection(text="No verdict at all."),
    ]
    message.samples.add(text=f"<answer>{problem.answer}</answer>", correct=True).reflections.extend(
        reflections
    )
    response = _stub(start_server().address).Compose(
        composer_pb2.ComposeRequest(problems=[message]), timeout=10
    )
    assert response.summary.pairs_kept_correct == 2 and response.summary.pairs_dropped_correct == 1
    texts = [trace.messages[1].content for trace in response.traces]  # one sample: a trace a pair
    assert len(texts) == 2 and any("Looks right.\n<verdict>Correct</verdict>" in t for t in texts)
