"""Elastic rollouts: how many rollout replicas the work needs, and who sets it.

The backlog is the rollout work waiting on the queue: entries of the task streams (`prompts` for
GRPO, `generations` for stage 1 and eval) not yet delivered plus those delivered and not acked.
The policy asks for `ceil(backlog / tasks_per_replica)` replicas, between `min_replicas` and
`max_replicas`. GRPO's staleness bound already paces what reaches the backlog (the learner only
admits prompts it has headroom for), so a learner-bound run shows a small backlog and does not
grow the fleet, while a sampler-bound one shows a growing one. Scaling out waits
`scale_up_cooldown_s` after the last change, scaling in `scale_down_cooldown_s` (the backlog must
have stayed low that long), so a burst does not make the fleet flap.

A `ScaleTarget` applies the decision: the rollout Deployment's `scale` subresource through the
Kubernetes API (`DeploymentScale`; the chart grants a Role on that one subresource), or the local
supervisor's processes (`skillfactory up`). Scaling in *drains*: the removed replicas get
SIGTERM, their workers finish the batch in hand and exit; a task a replica took and did not ack is
reclaimed by another replica after `claim_idle_ms` — finished or reclaimed, never lost. Where KEDA
is installed the chart lets a KEDA `ScaledObject` scale on the same streams instead.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from skillfactory.queue import Queue
from skillfactory.rollout.streams import (
    GENERATIONS_STREAM,
    GENERATORS_GROUP,
    PROMPTS_STREAM,
    SAMPLERS_GROUP,
)

log = logging.getLogger(__name__)

TASK_STREAMS: tuple[tuple[str, str], ...] = (
    (PROMPTS_STREAM, SAMPLERS_GROUP),
    (GENERATIONS_STREAM, GENERATORS_GROUP),
)
"""The streams of rollout work and the consumer group that serves each."""


@dataclass(frozen=True)
class ScalingPolicy:
    """Bounds and pace of the rollout fleet."""

    min_replicas: int = 1
    """Fewest replicas, even with no work."""
    max_replicas: int = 4
    """Most replicas, whatever the backlog."""
    tasks_per_replica: int = 16
    """Backlog one replica is expected to absorb."""
    scale_up_cooldown_s: float = 30.0
    """Seconds after a change before the fleet may grow again."""
    scale_down_cooldown_s: float = 300.0
    """Seconds after a change (and of a lower need) before the fleet may shrink."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError("need 0 ≤ min_replicas ≤ max_replicas and max_replicas ≥ 1")
        if self.tasks_per_replica < 1:
            raise ValueError("tasks_per_replica must be at least 1")

    def wanted(self, backlog: int) -> int:
        """Replicas the backlog asks for, within the bounds."""
        need = math.ceil(max(0, backlog) / self.tasks_per_replica)
        return min(self.max_replicas, max(self.min_replicas, need))


@dataclass(frozen=True)
class Decision:
    """What one look at the backlog decided."""

    backlog: int
    current: int
    wanted: int
    replicas: int
    """What the fleet is set to (equal to `current` when nothing changes)."""
    reason: str


def backlog(queue: Queue, streams: Sequence[tuple[str, str]] = TASK_STREAMS) -> int:
    """Rollout tasks waiting: undelivered plus delivered and not acked, over the task streams (a
    stream nobody created yet counts 0)."""
    total = 0
    for stream, group in streams:
        try:
            total += queue.depth(stream, group) + queue.pending(stream, group)
        except Exception:  # no such stream or group yet
            continue
    return total


class ScaleTarget(Protocol):
    """Where the number of replicas lives."""

    def replicas(self) -> int: ...

    def set_replicas(self, count: int) -> None: ...


class Autoscaler:
    """Looks at the backlog every `period_s` and sets the target's replicas by the policy."""

    def __init__(
        self,
        policy: ScalingPolicy,
        target: ScaleTarget,
        measure: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.target = target
        self.measure = measure
        self.clock = clock
        self.last_change = -math.inf
        self.low_since: float | None = None
        """When the need first dropped below the current size (scale-in waits from there)."""
        self.decisions: list[Decision] = []

    def tick(self) -> Decision:
        """One look: measure, decide, apply."""
        now = self.clock()
        work = self.measure()
        current = self.target.replicas()
        wanted = self.policy.wanted(work)
        replicas, reason = current, "steady"
        if wanted > current:
            self.low_since = None
            if now - self.last_change >= self.policy.scale_up_cooldown_s:
                replicas, reason = wanted, "backlog"
            else:
                reason = "scale-up cooldown"
        elif wanted < current:
            self.low_since = now if self.low_since is None else self.low_since
            calm = now - max(self.last_change, self.low_since)
            if calm >= self.policy.scale_down_cooldown_s:
                replicas, reason = wanted, "drain"
            else:
                reason = "scale-down cooldown"
        else:
            self.low_since = None
        if replicas != current:
            self.target.set_replicas(replicas)
            self.last_change, self.low_since = now, None
            log.info(
                "rollout fleet scaled",
                extra={"from": current, "to": replicas, "backlog": work, "reason": reason},
            )
        decision = Decision(work, current, wanted, replicas, reason)
        self.decisions.append(decision)
        del self.decisions[:-100]
        return decision

    def run(self, stop: threading.Event, period_s: float = 5.0) -> None:
        """Tick until `stop` is set; errors (API or queue unreachable) are logged and retried."""
        while not stop.wait(period_s):
            try:
                self.tick()
            except Exception:
                log.exception("autoscaler tick failed; retrying")

    def start(self, stop: threading.Event, period_s: float = 5.0) -> threading.Thread:
        thread = threading.Thread(
            target=self.run, args=(stop, period_s), name="rollout-autoscaler", daemon=True
        )
        thread.start()
        return thread


class DeploymentScale:
    """The `scale` subresource of one Deployment, through the Kubernetes API (the `kubernetes`
    client; in a pod, the service account's credentials)."""

    def __init__(self, name: str, namespace: str, api: Any = None) -> None:
        self.name = name
        self.namespace = namespace
        self.api = api if api is not None else _apps_api()

    def replicas(self) -> int:
        scale = self.api.read_namespaced_deployment_scale(self.name, self.namespace)
        return int(scale.spec.replicas or 0)

    def set_replicas(self, count: int) -> None:
        body = {"spec": {"replicas": count}}
        self.api.patch_namespaced_deployment_scale(self.name, self.namespace, body)


def _apps_api() -> Any:
    # deferred: optional (kubernetes, the serve extra; only in a pod)
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.AppsV1Api()
