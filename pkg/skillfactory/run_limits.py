"""Per-run limits a learner service enforces on submitted specs, so that no one run holds the
single run slot for ever (`learner serve --max-steps …`, the chart's `learner.limits`).

`check_run_limits(spec, limits, spec_bytes)` raises `InvalidRunSpec` naming every field over a
limit (the learner answers INVALID_ARGUMENT at submit time); a limit left at None bounds nothing.
Each limit bounds these fields:

| limit | fields |
|---|---|
| `max_steps` | `grpo.steps` |
| `max_problems` | `data.num_problems`, `grpo.num_problems`, `eval.num_problems` |
| `max_tokens` | `data.sampling.max_tokens`, `data.reflection_sampling.max_tokens`, `grpo.max_prompt_length`, `grpo.max_response_length`, `eval.max_tokens`, `eval.budget_forcing.total_budget`, `sft.max_length` |
| `max_samples` | `data.samples_per_variant`, `data.reflections_per_sample`, `grpo.group_size`, `eval.samples_per_problem` |
| `max_epochs` | `sft.num_epochs`, `grpo.epochs_per_batch` |
| `max_spec_bytes` | the serialized spec (`<spec>`) |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skillfactory.runspec import InvalidRunSpec, RunSpec, SpecProblem

BOUNDED_FIELDS: dict[str, tuple[str, ...]] = {
    "max_steps": ("grpo.steps",),
    "max_problems": ("data.num_problems", "grpo.num_problems", "eval.num_problems"),
    "max_tokens": (
        "data.sampling.max_tokens",
        "data.reflection_sampling.max_tokens",
        "grpo.max_prompt_length",
        "grpo.max_response_length",
        "eval.max_tokens",
        "eval.budget_forcing.total_budget",
        "sft.max_length",
    ),
    "max_samples": (
        "data.samples_per_variant",
        "data.reflections_per_sample",
        "grpo.group_size",
        "eval.samples_per_problem",
    ),
    "max_epochs": ("sft.num_epochs", "grpo.epochs_per_batch"),
}
"""The spec fields each limit bounds (dotted paths)."""


@dataclass(frozen=True)
class RunLimits:
    """Largest values a submitted spec may ask for; None: no limit."""

    max_steps: int | None = None
    """GRPO optimizer steps."""
    max_problems: int | None = None
    """Problems of any stage."""
    max_tokens: int | None = None
    """Tokens of one prompt or response (sampling, SFT sequence length, eval budgets)."""
    max_samples: int | None = None
    """Samples per problem (stage-1 samples and reflections, GRPO group, eval samples)."""
    max_epochs: float | None = None
    """Passes over the data (SFT epochs, GRPO updates per batch)."""
    max_spec_bytes: int | None = None
    """Size of the serialized spec."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None for no limit), got {value}")


def _value(spec: RunSpec, path: str) -> Any:
    value: Any = spec
    for part in path.split("."):
        value = getattr(value, part)
    return value


def check_run_limits(spec: RunSpec, limits: RunLimits, spec_bytes: int | None = None) -> None:
    """Raise `InvalidRunSpec` naming each field of `spec` over `limits` (see the module
    docstring); `spec_bytes` is the size of the spec as submitted."""
    problems: list[SpecProblem] = []
    for limit, fields in BOUNDED_FIELDS.items():
        bound = getattr(limits, limit)
        if bound is None:
            continue
        for path in fields:
            value = _value(spec, path)
            if value > bound:
                message = f"more than the learner's limit ({limit} = {bound})"
                problems.append(SpecProblem(path=path, value=value, message=message))
    too_big = (
        limits.max_spec_bytes is not None
        and spec_bytes is not None
        and spec_bytes > limits.max_spec_bytes
    )
    if too_big:
        message = f"{spec_bytes} bytes, more than the learner's limit ({limits.max_spec_bytes})"
        problems.append(SpecProblem(path="<spec>", value=spec_bytes, message=message))
    if problems:
        raise InvalidRunSpec(problems)
