"""The rollout autoscaler's decisions, and the Kubernetes scale subresource it sets.

No Kubernetes API server exists here: `FakeAppsApi` stands in for the two calls of the
`kubernetes` client the scaler makes (`read_namespaced_deployment_scale`,
`patch_namespaced_deployment_scale`), holding the replica count a real Deployment's `scale`
subresource would hold.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from skillfactory.queue import InProcessQueue
from skillfactory.rollout.scaling import (
    Autoscaler,
    DeploymentScale,
    ScalingPolicy,
    backlog,
)
from skillfactory.rollout.streams import GENERATIONS_STREAM, GENERATORS_GROUP, PROMPTS_STREAM


class FakeAppsApi:
    """Stands in for `kubernetes.client.AppsV1Api` (no API server here): one Deployment."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    def read_namespaced_deployment_scale(self, name: str, namespace: str) -> Any:
        return SimpleNamespace(spec=SimpleNamespace(replicas=self.replicas))

    def patch_namespaced_deployment_scale(
        self, name: str, namespace: str, body: dict[str, Any]
    ) -> None:
        self.patches.append((name, namespace, body))
        self.replicas = body["spec"]["replicas"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scaler(api: FakeAppsApi, work: list[int], clock: Clock, **policy: Any) -> Autoscaler:
    values = {"min_replicas": 1, "max_replicas": 4, "tasks_per_replica": 10}
    values |= {"scale_up_cooldown_s": 30.0, "scale_down_cooldown_s": 120.0, **policy}
    target = DeploymentScale("skillfactory-rollout", "ml", api=api)
    return Autoscaler(ScalingPolicy(**values), target, lambda: work[0], clock)


def test_the_backlog_sets_the_size_within_min_and_max() -> None:
    policy = ScalingPolicy(min_replicas=1, max_replicas=4, tasks_per_replica=10)
    assert [policy.wanted(b) for b in (0, 1, 10, 11, 35, 1000)] == [1, 1, 1, 2, 4, 4]
    with pytest.raises(ValueError):
        ScalingPolicy(min_replicas=3, max_replicas=2)


def test_scale_out_at_once_then_wait_for_the_cooldown() -> None:
    api, clock, work = FakeAppsApi(1), Clock(), [25]
    auto = scaler(api, work, clock)
    assert auto.tick().replicas == 3 and api.replicas == 3
    assert api.patches == [("skillfactory-rollout", "ml", {"spec": {"replicas": 3}})]
    work[0] = 100
    clock.now += 10
    decision = auto.tick()
    assert decision.reason == "scale-up cooldown" and api.replicas == 3
    clock.now += 25
    assert auto.tick().replicas == 4  # the cooldown passed; capped at max_replicas


def test_scale_in_waits_for_a_sustained_low_need_and_drains_to_the_minimum() -> None:
    api, clock, work = FakeAppsApi(4), Clock(), [0]
    auto = scaler(api, work, clock)
    assert auto.tick().reason == "scale-down cooldown" and api.replicas == 4
    clock.now += 100
    work[0] = 35  # the need comes back before the cooldown ends: no flapping
    assert auto.tick().reason == "steady"
    work[0] = 0
    clock.now += 100
    assert auto.tick().reason == "scale-down cooldown"  # the calm period starts over
    clock.now += 121
    decision = auto.tick()
    assert decision.reason == "drain" and decision.replicas == 1 and api.replicas == 1


def test_the_backlog_counts_waiting_and_unacked_tasks_of_both_task_streams() -> None:
    queue = InProcessQueue()
    assert backlog(queue) == 0  # no stream yet
    for _ in range(3):
        queue.put(PROMPTS_STREAM, b"task")
    for _ in range(2):
        queue.put(GENERATIONS_STREAM, b"task")
    taken = queue.get(GENERATIONS_STREAM, GENERATORS_GROUP, "w", 1, 0)
    assert len(taken) == 1
    assert backlog(queue) == 5  # 3 waiting + 1 waiting + 1 in hand, not acked
    queue.ack(GENERATIONS_STREAM, GENERATORS_GROUP, [taken[0].id])
    assert backlog(queue) == 4
