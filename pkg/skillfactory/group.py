"""A GRPO group: one prompt, its sampled completions and their rewards, tagged with the policy
version that sampled them. What samplers push to the queue and the learner trains on.

Pure Python (no torch). `to_proto` / `from_proto` convert to and from `skillfactory.v1.Group`, the
queue payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from skillfactory.engines.base import Completion
from skillfactory.tasks.base import Problem
from skillfactory.v1 import data_pb2

_FINISH_TO_PROTO = {
    "stop": data_pb2.FINISH_REASON_STOP,
    "length": data_pb2.FINISH_REASON_LENGTH,
    "abort": data_pb2.FINISH_REASON_ABORT,
}
_FINISH_FROM_PROTO = {v: k for k, v in _FINISH_TO_PROTO.items()}


@dataclass
class Group:
    """One prompt's completions (same prompt tokens) and the reward of each, in order."""

    group_id: str
    """Unique id within the run, stable across restarts (e.g. `p17`: the 17th prompt drawn)."""
    problem: Problem
    """The problem the prompt asks."""
    prompt_token_ids: list[int]
    """Tokens of the rendered prompt, shared by every completion."""
    completions: list[Completion]
    """Sampled completions, each with its token ids, behaviour logprobs and policy version."""
    rewards: list[float]
    """Reward of each completion (1 correct, 0 not)."""
    sampler_id: str = ""
    """Which sampler produced it."""
    prompt_index: int = -1
    """Position of the prompt in the run's prompt stream."""
    epoch: str = ""
    """Learner incarnation whose rollout task asked for it (distributed mode; else empty)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form annotations (not sent over the wire)."""

    def __post_init__(self) -> None:
        if len(self.rewards) != len(self.completions):
            raise ValueError("a group needs one reward per completion")

    @property
    def policy_version(self) -> int:
        """The oldest policy version among the completions: how stale the group is."""
        return min((c.policy_version for c in self.completions), default=0)

    @property
    def mean_reward(self) -> float:
        """Mean reward of the group."""
        return sum(self.rewards) / len(self.rewards) if self.rewards else 0.0

    def rewards_vary(self) -> bool:
        """Whether the rewards differ at all (a constant group has zero advantage everywhere)."""
        return len(set(self.rewards)) > 1

    def to_proto(self, run_id: str = "") -> data_pb2.Group:
        """The queue message of this group."""
        message = data_pb2.Group(
            run_id=run_id,
            group_id=self.group_id,
            prompt="",
            policy_version=self.policy_version,
            sampler_id=self.sampler_id,
            epoch=self.epoch,
            prompt_index=self.prompt_index,
        )
        problem = self.problem
        message.problem.id, message.problem.task = problem.id, problem.task
        message.problem.question, message.problem.answer = problem.question, problem.answer
        message.problem.data.update({"_prompt_index": self.prompt_index, **problem.data})
        for completion, reward in zip(self.completions, self.rewards, strict=True):
            message.completions.append(
                data_pb2.Completion(
                    text=completion.text,
                    token_ids=completion.token_ids,
                    logprobs=completion.logprobs,
                    policy_version=completion.policy_version,
                    finish_reason=_FINISH_TO_PROTO[completion.finish_reason],
                    prompt_token_ids=self.prompt_token_ids,
                )
            )
            message.rewards.append(data_pb2.Reward(value=reward, correct=reward > 0))
        return message

    @classmethod
    def from_proto(cls, message: data_pb2.Group) -> Group:
        """A group from its queue message."""
        data = {key: _plain(value) for key, value in message.problem.data.items()}
        prompt_index = int(data.pop("_prompt_index", -1))
        problem = Problem(
            id=message.problem.id,
            task=message.problem.task,
            question=message.problem.question,
            answer=message.problem.answer,
            data=data,
        )
        completions = [
            Completion(
                text=c.text,
                token_ids=list(c.token_ids),
                logprobs=list(c.logprobs),
                finish_reason=_FINISH_FROM_PROTO.get(c.finish_reason, "stop"),  # type: ignore[arg-type]
                policy_version=c.policy_version,
                prompt_token_ids=list(c.prompt_token_ids),
            )
            for c in message.completions
        ]
        prompt_ids = completions[0].prompt_token_ids if completions else []
        return cls(
            group_id=message.group_id,
            problem=problem,
            prompt_token_ids=prompt_ids,
            completions=completions,
            rewards=[r.value for r in message.rewards],
            sampler_id=message.sampler_id,
            prompt_index=prompt_index,
            epoch=message.epoch,
        )


def _plain(value: Any) -> Any:
    """Struct values back to Python: integral floats become ints (Struct stores every number as
    a double), lists and mappings recursively."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    return value
