"""The GRPO policy loss with a decoupled (proximal/behaviour) PPO objective, pure torch.

Three log-probabilities of every completion token meet here:

- `logprobs`: the policy being trained, π_θ (carries the gradient);
- `proximal_logprobs`: π_prox, recomputed by the learner with the weights at the start of the
  optimizer step (no gradient);
- `behaviour_logprobs`: π_behav, reported by the engine that sampled the token, possibly with an
  older policy version.

Per token (AReaL; Hilton et al., "Batch size-invariance for policy optimization"):

    ratio  r = exp(logprobs − proximal)                     the PPO ratio, clipped
    weight w = min(exp(proximal − behaviour), cap)          off-policy correction, detached
    loss_t  = −w · min(r·A, clip(r, 1 − ε_low, 1 + ε_high)·A)  +  β · KL_t
    KL_t    = k1, k2 or k3 of (logprobs, ref)               (only with β > 0 and ref logprobs)

Options (`GRPOLossConfig`):

- `importance_level="sequence"` (GSPO): r is one ratio per sequence, the geometric mean of its
  token ratios exp(mean_t(logprobs − proximal)), clipped once and shared by every token (TRL
  `importance_sampling_level`); w stays per token;
- `clip_c` (dual-clip, verl `clip_ratio_c`): where A < 0 the clipped term is further bounded,
  loss_t ≤ −c·A·w, so a token whose ratio exploded cannot dominate the update;
- `kl_estimator`: k1 = logp − ref, k2 = ½(logp − ref)², k3 = exp(ref − logp) − (ref − logp) − 1;
- `kl_in_reward`: the KL is subtracted from the rewards before the advantages (the learner does
  that), so the loss has no KL term; the KL is still reported.

When behaviour == proximal (synchronous, `max_staleness: 0`) every w is exactly 1.0 and the loss
is standard PPO-clip GRPO. The KL term is not importance-weighted (as in TRL). Per-token losses
are then aggregated over the completion tokens (`mask`) by the loss type:

- `token-mean` (DAPO): Σ loss_t / number of tokens;
- `sequence-mean` (GRPO): mean over each sequence's tokens, then mean over sequences;
- `dr-grpo` (Dr.GRPO): Σ loss_t / (number of sequences × max_completion_length).

When a step is split into micro-batches, pass the whole step's `num_tokens` and `num_sequences`
so that the micro-batch losses add up to the loss of the full batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, get_args

import torch
from torch import Tensor

from skillfactory.runspec import ImportanceLevel, KLEstimator, LossType

if TYPE_CHECKING:
    from skillfactory.runspec import GRPOSpec

LOSS_TYPES: tuple[LossType, ...] = get_args(LossType)
"""The loss aggregations: token-mean, sequence-mean, dr-grpo."""
IMPORTANCE_LEVELS: tuple[ImportanceLevel, ...] = get_args(ImportanceLevel)
KL_ESTIMATORS: tuple[KLEstimator, ...] = get_args(KLEstimator)


@dataclass(frozen=True)
class GRPOLossConfig:
    """Parameters of the policy loss; `from_spec` reads them from the run spec's `grpo` section."""

    loss_type: LossType = "token-mean"
    """Aggregation over tokens: token-mean (DAPO), sequence-mean (GRPO) or dr-grpo."""
    clip_eps_low: float = 0.2
    """Lower PPO clip: ratios below 1 − ε_low are clipped (where the advantage is negative)."""
    clip_eps_high: float = 0.2
    """Upper PPO clip: ratios above 1 + ε_high are clipped (where the advantage is positive)."""
    importance_weight_cap: float = 2.0
    """Truncation of the behaviour→proximal importance weight exp(proximal − behaviour)."""
    kl_beta: float = 0.0
    """Weight of the per-token KL to the reference policy; 0 disables it."""
    max_completion_length: int = 4096
    """Constant denominator of dr-grpo (tokens per completion); unused by the other types."""
    importance_level: ImportanceLevel = "token"
    """PPO ratio per token, or per sequence (GSPO: geometric mean of the token ratios)."""
    clip_c: float | None = None
    """Dual-clip bound (> 1) on the loss of negative-advantage tokens; None: off."""
    kl_estimator: KLEstimator = "k3"
    """Per-token KL estimator: k1, k2 or k3."""
    kl_in_reward: bool = False
    """The KL went into the rewards: no KL term in the loss (the KL is still reported)."""

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if not 0.0 <= self.clip_eps_low <= 1.0 or self.clip_eps_high < 0.0:
            raise ValueError("need 0 ≤ clip_eps_low ≤ 1 and clip_eps_high ≥ 0")
        if self.importance_weight_cap < 1.0:
            raise ValueError("importance_weight_cap must be at least 1")
        if self.kl_beta < 0.0:
            raise ValueError("kl_beta must be non-negative")
        if self.max_completion_length < 1:
            raise ValueError("max_completion_length must be at least 1")
        if self.importance_level not in IMPORTANCE_LEVELS:
            raise ValueError(f"importance_level must be one of {IMPORTANCE_LEVELS}")
        if self.clip_c is not None and self.clip_c <= 1.0:
            raise ValueError("clip_c must be greater than 1")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}")

    @classmethod
    def from_spec(cls, spec: GRPOSpec) -> GRPOLossConfig:
        """The loss parameters of a run spec's `grpo` section (dr-grpo uses max_response_length)."""
        return cls(
            loss_type=spec.loss,
            clip_eps_low=spec.clip_eps_low,
            clip_eps_high=spec.clip_eps_high,
            importance_weight_cap=spec.importance_weight_cap,
            kl_beta=spec.kl_beta,
            max_completion_length=spec.max_response_length,
            importance_level=spec.importance_level,
            clip_c=spec.clip_c,
            kl_estimator=spec.kl_estimator,
            kl_in_reward=spec.kl_in_reward,
        )


@dataclass(frozen=True)
class GRPOLossOutput:
    """The loss to backpropagate and detached 0-d metric tensors (masked token means)."""

    loss: Tensor
    """Scalar loss (policy term plus β·KL), differentiable in `logprobs` only."""
    policy_loss: Tensor
    """The policy term alone, aggregated like `loss` (detached)."""
    kl: Tensor
    """Mean per-token KL to the reference by the configured estimator (reported whenever
    `ref_logprobs` is given; 0 without)."""
    clip_fraction: Tensor
    """Fraction of tokens whose clipped term is active (r < 1 − ε_low with A < 0, or r > 1 + ε_high
    with A > 0): they contribute no gradient."""
    ratio_mean: Tensor
    """Mean of r = exp(logprobs − proximal)."""
    importance_weight_mean: Tensor
    """Mean of the applied (truncated) importance weight w."""
    truncated_fraction: Tensor
    """Fraction of tokens whose importance weight exceeded the cap and was truncated."""
    dual_clip_fraction: Tensor
    """Fraction of tokens held by the dual-clip bound (0 without `clip_c`)."""
    entropy: Tensor
    """Mean token entropy of the policy (when `entropy` is given; 0 without)."""
    mismatch_ratio_mean: Tensor
    """Mean of π_prox/π_sampler = exp(proximal − sampler logprobs), before truncation: the
    engine/learner mismatch (at staleness 0 alone; policy lag too for staler tokens). Equal to the
    importance weight's raw mean when `sampler_logprobs` is not given."""
    mismatch_ratio_max: Tensor
    """Largest such ratio of the batch."""

    def metrics(self) -> dict[str, float]:
        """Every field as a Python float (one device sync per field; call when logging)."""
        return {
            "loss": float(self.loss.detach().item()),
            "policy_loss": float(self.policy_loss.item()),
            "kl": float(self.kl.item()),
            "clip_fraction": float(self.clip_fraction.item()),
            "ratio_mean": float(self.ratio_mean.item()),
            "importance_weight_mean": float(self.importance_weight_mean.item()),
            "truncated_fraction": float(self.truncated_fraction.item()),
            "dual_clip_fraction": float(self.dual_clip_fraction.item()),
            "entropy": float(self.entropy.item()),
            "mismatch_ratio_mean": float(self.mismatch_ratio_mean.item()),
            "mismatch_ratio_max": float(self.mismatch_ratio_max.item()),
        }


def policy_ratio(logprobs: Tensor, proximal_logprobs: Tensor) -> Tensor:
    """r = π_θ / π_prox per token; the gradient flows through `logprobs`."""
    return torch.exp(logprobs - proximal_logprobs.detach())


def importance_weight(proximal_logprobs: Tensor, behaviour_logprobs: Tensor, cap: float) -> Tensor:
    """w = min(π_prox / π_behav, cap) per token, detached. Exactly 1.0 where the two are equal."""
    weight = torch.exp(proximal_logprobs.detach() - behaviour_logprobs.detach())
    return weight.clamp(max=cap)


def clipped_surrogate(
    ratio: Tensor, advantages: Tensor, clip_eps_low: float, clip_eps_high: float
) -> Tensor:
    """Per-token PPO-clip loss −min(r·A, clip(r, 1 − ε_low, 1 + ε_high)·A)."""
    clipped = ratio.clamp(1.0 - clip_eps_low, 1.0 + clip_eps_high)
    return -torch.min(ratio * advantages, clipped * advantages)


def dual_clipped_surrogate(
    ratio: Tensor,
    advantages: Tensor,
    clip_eps_low: float,
    clip_eps_high: float,
    clip_c: float | None,
) -> tuple[Tensor, Tensor]:
    """The PPO-clip loss with verl's dual clip: where A < 0 it is at most −c·A. Returns the
    per-token loss and where the dual bound holds it (all False without `clip_c`)."""
    surrogate = clipped_surrogate(ratio, advantages, clip_eps_low, clip_eps_high)
    if clip_c is None:
        return surrogate, torch.zeros_like(surrogate, dtype=torch.bool)
    bound = -clip_c * advantages
    held = (advantages < 0) & (surrogate > bound)
    return torch.where(advantages < 0, torch.min(surrogate, bound), surrogate), held


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(π_θ ‖ π_ref): exp(ref − logp) − (ref − logp) − 1 ≥ 0."""
    delta = ref_logprobs.detach() - logprobs
    return torch.exp(delta) - delta - 1.0


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator) -> Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) from the sampled tokens' logprobs (Schulman's
    k1 = logp − ref, k2 = ½(logp − ref)², k3; verl `kl`, `mse`, `low_var_kl` unclamped)."""
    if estimator == "k3":
        return k3_kl(logprobs, ref_logprobs)
    delta = logprobs - ref_logprobs.detach()
    return delta if estimator == "k1" else 0.5 * delta.square()


def sequence_log_ratio(logprobs: Tensor, proximal_logprobs: Tensor, mask: Tensor) -> Tensor:
    """`[B, 1]` GSPO log-ratio: the mean over each sequence's tokens of logprobs − proximal."""
    log_ratio = (logprobs - proximal_logprobs.detach()) * mask
    return (log_ratio.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).unsqueeze(1)


def aggregate_loss(
    per_token: Tensor,
    mask: Tensor,
    config: GRPOLossConfig,
    *,
    num_tokens: float | None = None,
    num_sequences: int | None = None,
) -> Tensor:
    """Reduce a `[B, T]` per-token loss over the completion tokens by `config.loss_type`.

    `num_tokens` (token-mean) and `num_sequences` (sequence-mean, dr-grpo) default to this batch's
    own; pass the whole step's to make micro-batch losses sum to the step's loss.
    """
    masked = per_token * mask
    sequences = per_token.shape[0] if num_sequences is None else num_sequences
    if config.loss_type == "token-mean":
        if num_tokens is None:
            return masked.sum() / mask.sum().clamp(min=1.0)
        return masked.sum() / max(float(num_tokens), 1.0)
    if config.loss_type == "sequence-mean":
        per_sequence = masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return per_sequence.sum() / max(sequences, 1)
    return masked.sum() / (max(sequences, 1) * config.max_completion_length)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _check_shapes(logprobs: Tensor, others: dict[str, Tensor | None]) -> None:
    for name, tensor in others.items():
        if tensor is not None and tensor.shape != logprobs.shape:
            raise ValueError(f"{name} {tuple(tensor.shape)} != logprobs {tuple(logprobs.shape)}")


def grpo_policy_loss(
    logprobs: Tensor,
    proximal_logprobs: Tensor,
    behaviour_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    config: GRPOLossConfig,
    *,
    ref_logprobs: Tensor | None = None,
    num_tokens: float | None = None,
    num_sequences: int | None = None,
    entropy: Tensor | None = None,
    sampler_logprobs: Tensor | None = None,
) -> GRPOLossOutput:
    """The decoupled-PPO GRPO loss of one batch of completions (see the module docstring).

    Shapes: `logprobs`, `behaviour_logprobs`, `proximal_logprobs`, `ref_logprobs` and `mask` are
    `[B, T]` (completion tokens only, `mask` 1 on real tokens); `advantages` is `[B]` (one per
    completion) or `[B, T]`. Passing the behaviour logprobs as proximal too skips the off-policy
    correction (plain PPO against the sampling policy, every w = 1). Computed in float32 (or
    float64 when `logprobs` is), whatever the inputs' dtype; only `logprobs` gets a gradient.
    `entropy` (`[B, T]`, the policy's token entropies) is only averaged for the metrics, and so
    are the ratios to `sampler_logprobs` (`[B, T]`, the engine's logprobs when `behaviour_logprobs`
    stand in for them, as the learner does for uncorrected staleness-0 tokens).
    """
    _check_shapes(
        logprobs,
        {
            "behaviour_logprobs": behaviour_logprobs,
            "proximal_logprobs": proximal_logprobs,
            "ref_logprobs": ref_logprobs,
            "mask": mask,
        },
    )
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    logprobs = logprobs.to(dtype)
    behaviour = behaviour_logprobs.detach().to(dtype)
    proximal = proximal_logprobs.detach().to(dtype)
    mask = mask.to(dtype)
    advantages = advantages.detach().to(dtype)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)

    if config.importance_level == "sequence":
        ratio = torch.exp(sequence_log_ratio(logprobs, proximal, mask)).expand_as(logprobs)
    else:
        ratio = policy_ratio(logprobs, proximal)
    raw_weight = torch.exp(proximal - behaviour)
    weight = raw_weight.clamp(max=config.importance_weight_cap)
    surrogate, dual_clipped = dual_clipped_surrogate(
        ratio, advantages, config.clip_eps_low, config.clip_eps_high, config.clip_c
    )
    policy_per_token = weight * surrogate
    policy_loss = aggregate_loss(
        policy_per_token, mask, config, num_tokens=num_tokens, num_sequences=num_sequences
    )

    kl = torch.zeros((), dtype=dtype, device=logprobs.device)
    per_token = policy_per_token
    in_loss = config.kl_beta > 0.0 and not config.kl_in_reward
    if in_loss and ref_logprobs is None:
        raise ValueError("kl_beta > 0 needs ref_logprobs")
    if ref_logprobs is not None:
        kl_per_token = kl_estimate(logprobs, ref_logprobs.to(dtype), config.kl_estimator)
        kl = _masked_mean(kl_per_token.detach(), mask)
        if in_loss:
            per_token = policy_per_token + config.kl_beta * kl_per_token
    loss = aggregate_loss(
        per_token, mask, config, num_tokens=num_tokens, num_sequences=num_sequences
    )

    ratio = ratio.detach()
    clipped = ((ratio < 1.0 - config.clip_eps_low) & (advantages < 0)) | (
        (ratio > 1.0 + config.clip_eps_high) & (advantages > 0)
    )
    truncated = raw_weight > config.importance_weight_cap
    mismatch = raw_weight
    if sampler_logprobs is not None:
        mismatch = torch.exp(proximal - sampler_logprobs.detach().to(dtype))
    real = mask > 0
    mismatch_max = (
        mismatch[real].max()
        if bool(real.any())
        else torch.ones((), dtype=dtype, device=mask.device)
    )
    return GRPOLossOutput(
        loss=loss,
        policy_loss=policy_loss.detach(),
        kl=kl,
        clip_fraction=_masked_mean(clipped.to(dtype), mask),
        ratio_mean=_masked_mean(ratio, mask),
        importance_weight_mean=_masked_mean(weight, mask),
        truncated_fraction=_masked_mean(truncated.to(dtype), mask),
        dual_clip_fraction=_masked_mean(dual_clipped.to(dtype), mask),
        mismatch_ratio_mean=_masked_mean(mismatch, mask),
        mismatch_ratio_max=mismatch_max,
        entropy=(
            torch.zeros((), dtype=dtype, device=logprobs.device)
            if entropy is None
            else _masked_mean(entropy.detach().to(dtype), mask)
        ),
    )
