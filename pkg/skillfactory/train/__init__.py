"""Training: GRPO advantages, the decoupled-PPO policy loss, staleness and admission pacing.

Names are re-exported lazily: `skillfactory.train.staleness` (and importing `AdmissionController`
from here) loads no torch, so a dispatcher can use it without the train extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skillfactory.train.advantages import (
        ZeroVarianceGroups,
        group_advantages,
        zero_variance_groups,
    )
    from skillfactory.train.grpo_loss import (
        GRPOLossConfig,
        GRPOLossOutput,
        aggregate_loss,
        clipped_surrogate,
        grpo_policy_loss,
        importance_weight,
        k3_kl,
        policy_ratio,
    )
    from skillfactory.train.staleness import AdmissionController, StalenessFilter, group_staleness

_EXPORTS = {
    "ZeroVarianceGroups": "advantages",
    "group_advantages": "advantages",
    "zero_variance_groups": "advantages",
    "GRPOLossConfig": "grpo_loss",
    "GRPOLossOutput": "grpo_loss",
    "aggregate_loss": "grpo_loss",
    "clipped_surrogate": "grpo_loss",
    "grpo_policy_loss": "grpo_loss",
    "importance_weight": "grpo_loss",
    "k3_kl": "grpo_loss",
    "policy_ratio": "grpo_loss",
    "AdmissionController": "staleness",
    "StalenessFilter": "staleness",
    "group_staleness": "staleness",
}

__all__ = [
    "AdmissionController",
    "GRPOLossConfig",
    "GRPOLossOutput",
    "StalenessFilter",
    "ZeroVarianceGroups",
    "aggregate_loss",
    "clipped_surrogate",
    "group_advantages",
    "group_staleness",
    "grpo_policy_loss",
    "importance_weight",
    "k3_kl",
    "policy_ratio",
    "zero_variance_groups",
]


def __getattr__(name: str) -> Any:
    """Import the defining module on first use of a re-exported name."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
