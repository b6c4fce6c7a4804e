"""A client of the reward service, as the sampler workers' group scorer.

One `Score` call grades every completion of a batch of groups, each sent as a `ScoreGroup` (the
problem once, then its responses). A record the service could not
grade (its `error` is set) scores 0 and is logged; a failed call raises, so the sampler leaves its
tasks pending and retries them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from skillfactory.engines.base import Completion
from skillfactory.rollout.scoring import ScoredReward
from skillfactory.serving.auth import bearer_metadata
from skillfactory.serving.channels import open_channel
from skillfactory.tasks import Problem
from skillfactory.v1 import reward_pb2, reward_pb2_grpc
from skillfactory.wire.messages import problem_to_proto

log = logging.getLogger(__name__)


class RewardClient:
    """Scores groups with a remote reward service (callable as a `GroupScorer`)."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls_ca: Path | None = None,
        timeout_s: float = 60.0,
        max_message_mb: float = 64.0,
    ) -> None:
        size = int(max_message_mb * 1024 * 1024)
        options = [
            ("grpc.max_send_message_length", size),
            ("grpc.max_receive_message_length", size),
        ]
        self.channel = open_channel(address, tls_ca, options)
        self.stub = reward_pb2_grpc.RewardServiceStub(self.channel)
        self.metadata = bearer_metadata(token) if token else ()
        self.timeout_s = timeout_s

    def __call__(self, groups: Sequence[tuple[Problem, Sequence[Completion]]]) -> list[list[float]]:
        request = reward_pb2.ScoreRequest()
        for problem, completions in groups:
            request.groups.add(
                problem=problem_to_proto(problem),
                responses=[c.text for c in completions],
                response_tokens=[len(c.token_ids) for c in completions],
            )
        response = self.stub.Score(request, metadata=self.metadata, timeout=self.timeout_s)
        values = [
            ScoredReward(reward.value, reward.terms, reward.failed_terms)
            if reward.terms or reward.failed_terms
            else reward.value
            for reward in response.rewards
        ]
        errors = [reward.error for reward in response.rewards if reward.error]
        if errors:
            log.warning(
                "ungradable records scored 0", extra={"errors": len(errors), "first": errors[0]}
            )
        expected = sum(len(completions) for _, completions in groups)
        if len(values) != expected:
            raise RuntimeError(f"reward service answered {len(values)} of {expected}")
        rewards, start = [], 0
        for _, completions in groups:
            rewards.append(values[start : start + len(completions)])
            start += len(completions)
        return rewards

    def close(self) -> None:
        self.channel.close()
