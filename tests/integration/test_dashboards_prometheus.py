"""The reward-service dashboard against a real Prometheus scraping a real reward server.

A reward server runs in process (real gRPC on loopback, `/metrics` on a free port); a thread
sends Score batches (correct, wrong and unknown-task items) while Prometheus scrapes every second.
Every panel expression of charts/dashboards/reward.json must then return a finite sample, and
every series the dashboard names must hold data. The same Prometheus also parses every expression
of every other dashboard (syntax only: their services do not run here)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.prometheus import (
    PrometheusError,
    PrometheusServer,
    dashboard_expressions,
    has_finite_value,
    load_dashboard,
    prometheus_binary,
    series_names,
)

from skillfactory.serving.reward import setup_reward_server
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.tasks import get_task
from skillfactory.v1 import data_pb2, reward_pb2, reward_pb2_grpc

DASHBOARDS = Path(__file__).resolve().parents[2] / "charts" / "dashboards"

pytestmark = pytest.mark.skipif(
    prometheus_binary() is None,
    reason="the prometheus binary is missing (run scripts/install-os-packages.sh)",
)


@pytest.fixture
def reward_server() -> Iterator[ServiceServer]:
    server = setup_reward_server(ServingConfig(port=0, metrics_port=0, grace_s=1.0, linger_s=0.0))
    server.start()
    yield server
    server.stop(grace_s=0)


def score_items(task: str, n: int, correct: bool) -> list[reward_pb2.ScoreItem]:
    """`n` items of `task` answered with the reference answer, or with a wrong one."""
    items = []
    for problem in get_task(task).problems(n, seed=0):
        message = data_pb2.Problem(
            id=problem.id, task=problem.task, question=problem.question, answer=problem.answer
        )
        message.data.update(problem.data)
        answer = problem.answer if correct else "0"
        items.append(reward_pb2.ScoreItem(problem=message, response=f"<answer>{answer}</answer>"))
    return items


def score_batch() -> reward_pb2.ScoreRequest:
    """Correct and wrong answers of two tasks, plus one item whose task does not exist."""
    items = score_items("countdown-4", 3, True) + score_items("multiplication-2", 2, False)
    unknown = reward_pb2.ScoreItem(
        problem=data_pb2.Problem(task="no-such-task"), response="<answer>1</answer>"
    )
    return reward_pb2.ScoreRequest(items=[*items, unknown])


def send_batches(address: str, stop: threading.Event, period_s: float = 0.2) -> None:
    """Score a batch every `period_s` until `stop` is set, so every rate is non-zero."""
    with grpc.insecure_channel(address) as channel:
        stub = reward_pb2_grpc.RewardServiceStub(channel)
        while not stop.is_set():
            stub.Score(score_batch(), timeout=10)
            stop.wait(period_s)


@pytest.fixture
def scored_traffic(reward_server: ServiceServer) -> Iterator[ServiceServer]:
    stop = threading.Event()
    thread = threading.Thread(target=send_batches, args=(reward_server.address, stop), daemon=True)
    thread.start()
    yield reward_server
    stop.set()
    thread.join(timeout=15)


def metrics_address(server: ServiceServer) -> str:
    url = server.metrics_url
    assert url is not None, "the reward server has no metrics endpoint"
    return url.removeprefix("http://").removesuffix("/metrics")


def test_reward_dashboard_returns_data(scored_traffic: ServiceServer) -> None:
    dashboard = load_dashboard(DASHBOARDS / "reward.json")
    exprs = dashboard_expressions(dashboard)
    assert len(exprs) >= 10
    names = sorted(set().union(*(series_names(e) for e in exprs)))

    with PrometheusServer([metrics_address(scored_traffic)]) as prom:
        (target,) = prom.wait_for_targets_up()
        assert target["health"] == "up"
        results = prom.wait_for_data(exprs + [f"count({n})" for n in names], timeout_s=40)

    empty = [expr for expr, result in results.items() if not has_finite_value(result)]
    assert not empty, f"expressions without data: {empty}"
    graded = results[exprs[0]]
    assert {item["metric"]["task"] for item in graded} == {"countdown-4", "multiplication-2"}


def test_every_dashboard_expression_parses(reward_server: ServiceServer) -> None:
    """Prometheus itself refuses bad PromQL (a PrometheusError) even with no series behind it."""
    exprs = [
        e
        for path in sorted(DASHBOARDS.glob("*.json"))
        for e in dashboard_expressions(load_dashboard(path))
    ]
    assert len(exprs) > 50
    with PrometheusServer([metrics_address(reward_server)]) as prom:
        for expr in exprs:
            prom.query(expr)
        with pytest.raises(PrometheusError, match="parse error"):
            prom.query("sum by (le) (rate(x[1m])")
