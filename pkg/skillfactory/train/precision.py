"""What a spec's `precision` means on this machine, for SFT and the GRPO learner alike.

- `bf16-mixed`: fp32 master weights and optimizer state, bf16 compute (autocast, CPU too);
- `fp32`: everything in fp32;
- `bf16`: pure bf16 — weights and optimizer state in bf16. An Adam step at lr 1e-6 is about 1 %
  of the bf16 spacing of a weight near 0.02, so most updates round away: allowed when asked for,
  with a warning below lr 1e-5;
- `auto`: `bf16-mixed` on a GPU, `fp32` on a CPU.
"""

from __future__ import annotations

import warnings

PURE_BF16_MIN_LR = 1e-5
"""Below this learning rate pure bf16 updates mostly round away."""


def resolve_precision(precision: str, learning_rate: float, *, cuda: bool) -> str:
    """`precision` resolved for a machine with (`cuda`) or without a GPU."""
    if precision == "auto":
        return "bf16-mixed" if cuda else "fp32"
    if precision == "bf16" and learning_rate < PURE_BF16_MIN_LR:
        warnings.warn(
            f"pure bf16 at lr {learning_rate:g}: an Adam step is far below the bf16 spacing of "
            "most weights, so most updates round away; bf16-mixed keeps fp32 master weights",
            stacklevel=3,
        )
    return precision
