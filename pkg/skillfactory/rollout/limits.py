"""What one request may ask of a rollout service: the service's own caps, not the caller's.

A `Generate` call, a GRPO rollout task and a stage-1 / eval generation task all reach the same
engine, whose memory (a static KV cache is sized by `max_tokens`) and time grow with what they ask
for. `GenerationLimits` bounds each request; `refusal` names the first field over its cap, so a
`Generate` call is answered INVALID_ARGUMENT with that reason and a queued task goes to the dead
letters with it instead of being tried by every worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from skillfactory.engines.base import Prompt, SamplingParams


@dataclass(frozen=True)
class GenerationLimits:
    """Per-request caps of one rollout service (`serve rollout --max-tokens-limit …`)."""

    max_tokens: int = 16_384
    """Most new tokens one completion may ask for (the paper samples up to 4,096; budget forcing
    and long-context evals ask for more)."""
    max_n: int = 64
    """Most completions of one prompt (the paper's GRPO groups are 16)."""
    max_prompts: int = 1_024
    """Most prompts in one request."""
    max_prompt_chars: int = 200_000
    """Longest prompt, in characters of its text (all messages' contents for a chat)."""

    def __post_init__(self) -> None:
        if min(self.max_tokens, self.max_n, self.max_prompts, self.max_prompt_chars) < 1:
            raise ValueError("every generation limit must be at least 1")

    def refusal(self, params: SamplingParams, prompts: Sequence[Prompt] = ()) -> str | None:
        """Why a request of `prompts` sampled with `params` is over a cap (None: it is not)."""
        if params.max_tokens > self.max_tokens:
            return f"max_tokens {params.max_tokens} is over this service's limit {self.max_tokens}"
        if params.n > self.max_n:
            return f"n {params.n} is over this service's limit {self.max_n}"
        if len(prompts) > self.max_prompts:
            return f"{len(prompts)} prompts are over this service's limit {self.max_prompts}"
        longest = max((prompt_chars(p) for p in prompts), default=0)
        if longest > self.max_prompt_chars:
            return f"a prompt of {longest} characters is over this service's limit {self.max_prompt_chars}"
        return None


def prompt_chars(prompt: Prompt) -> int:
    """Characters of a prompt's text (every message's content for a chat)."""
    if isinstance(prompt, str):
        return len(prompt)
    return sum(len(str(message.get("content", ""))) for message in prompt)
