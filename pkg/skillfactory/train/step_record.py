"""What one GRPO step did: the record the learner writes, the stage completes, `steps.jsonl`
stores, and the learner service's metrics and run controller read.

A field renamed here is renamed for every reader at once (mypy checks them); no part reads a step
as a dict. `to_json` / `from_json` are the `steps.jsonl` line format (staleness keys as strings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class QueueLevel:
    """Depth (not yet delivered) and pending (delivered, not acked) entries of a stream."""

    depth: int = 0
    pending: int = 0


@dataclass
class StepRecord:
    """One optimizer step of the GRPO learner, and the stage's counters at that step."""

    version: int
    """The policy version the step produced."""
    loss: float
    policy_loss: float
    kl: float
    clip_fraction: float
    importance_weight_mean: float
    truncated_fraction: float
    grad_norm: float
    learning_rate: float
    reward_mean: float
    groups: int
    samples: int
    tokens: int
    staleness: dict[int, int]
    """Completions per staleness (learner version − policy version) in this step."""
    seconds: float
    """Wall time of the step (training only)."""
    group_ids: list[str]
    updates: int = 1
    """Optimizer updates the rollout batch took (mini-batches × epochs)."""
    weight_sync_seconds: float = 0.0
    """Learner seconds spent handing the new weights to the samplers."""
    dropped_stale: int = 0
    """Groups dropped as too stale so far in the stage."""
    dropped_zero_variance: int = 0
    """Groups dropped for constant rewards so far in the stage."""
    duplicate_groups: int = 0
    """Groups dropped so far because their prompt was already trained on or waiting."""
    queue: dict[str, QueueLevel] = field(default_factory=dict)
    """Levels of the GRPO streams after the step (by stream name)."""
    reward_terms: dict[str, float] = field(default_factory=dict)
    """Mean of each reward term (`grpo.rewards`, unweighted) over the step's completions."""
    reward_failures: dict[str, int] = field(default_factory=dict)
    """Completions of the step whose term raised, timed out or was not allowed (scored 0)."""
    entropy: float = 0.0
    """Mean token entropy of the policy over the step's completion tokens (TRL `entropy`, verl
    `actor/entropy`)."""
    dual_clip_fraction: float = 0.0
    """Fraction of tokens held by the dual-clip bound `grpo.clip_c` (0 without it)."""
    mismatch_ratio_mean: float = 1.0
    """Mean over the step's tokens of π_learner/π_engine = exp(proximal − engine logprobs),
    before truncation: at staleness 0 the engine/learner mismatch of the same weights, for staler
    tokens the policy lag too (TRL `sampling/importance_sampling_ratio/mean`)."""
    mismatch_ratio_max: float = 1.0
    """Largest such ratio of the step (TRL `sampling/importance_sampling_ratio/max`)."""
    truncated_completion_fraction: float = 0.0
    """Share of the step's completions the engine cut at their token budget (finish reason
    `length`), whether or not `grpo.mask_truncated_completions` masks them (TRL
    `completions/clipped_ratio`, verl `response_length/clip_ratio`)."""
    overlong_penalty_mean: float = 0.0
    """Mean over the step's completions of the soft overlong penalty added to their rewards
    (≤ 0; 0 without `grpo.overlong_buffer_length`; verl's DAPO reward manager: `overlong_reward`)."""

    def to_json(self) -> dict[str, Any]:
        """The `steps.jsonl` form."""
        data = asdict(self)
        data["staleness"] = {str(k): v for k, v in sorted(self.staleness.items())}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        """A record from its `steps.jsonl` form."""
        values = dict(data)
        values["staleness"] = {int(k): int(v) for k, v in data.get("staleness", {}).items()}
        values["queue"] = {k: QueueLevel(**v) for k, v in data.get("queue", {}).items()}
        return cls(**values)
