"""Budget forcing: when a response stops within its first budget, make the model try once more.

A response is first generated with at most B1 tokens. When it stopped by itself (finish reason
"stop", not "length"), the `<sample>` trigger is inserted before its `</think>` (the text from
`</think>` on is dropped) or, without `</think>`, appended; the model then continues that text as
its own assistant message, so that it writes another sample of the answer.

Token accounting is conservative, so a forced response never exceeds B2 tokens: it is charged
every token of the first response (also those after `</think>`, which are dropped), an upper bound
on the trigger's tokens (its UTF-8 bytes: a byte-level token is at least one byte) and every
continuation token. The continuation may generate what is left, rounded down to a multiple of
B2 / 16 so that the continuations share a few engine calls instead of one call each.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from skillfactory.engines.base import ChatMessage, Completion, Engine, SamplingParams

TRIGGER = "<sample>\n"
"""What is inserted to make the model sample again (the opening of a trace's next sample)."""
SEPARATOR = "\n"
"""Put before the trigger when the kept text does not end a line."""
TRIGGER_TOKENS = len((SEPARATOR + TRIGGER).encode("utf-8"))
"""Upper bound on the tokens the inserted text adds."""
BUCKETS = 16
"""Continuation budgets are rounded down to a multiple of B2 / BUCKETS."""

_THINK_CLOSE = re.compile(r"<\s*/\s*think\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class ForcedSample:
    """One sample under budget forcing: its text and tokens before and after forcing."""

    first_text: str
    first_tokens: int
    first_finish: str
    text: str
    """The final response: the forced text and its continuation, or `first_text` if not forced."""
    tokens: int
    """Tokens charged against B2 (see the module docstring); equals `first_tokens` if not forced."""
    forced: bool


def forced_text(response: str) -> str:
    """The assistant text the model continues: the response up to its first `</think>` (all of it
    when it has none), then the trigger, on a line of its own."""
    close = _THINK_CLOSE.search(response)
    kept = response[: close.start()] if close is not None else response
    if kept and not kept.endswith("\n"):
        kept += SEPARATOR
    return kept + TRIGGER


def continuation_budget(first_tokens: int, total_budget: int) -> int:
    """Most tokens a continuation may generate after a first response of `first_tokens` tokens,
    rounded down to a bucket; 0 means there is no room to force."""
    room = total_budget - first_tokens - TRIGGER_TOKENS
    step = max(1, total_budget // BUCKETS)
    return room if room < step else room - room % step


def should_force(first: Completion, total_budget: int) -> bool:
    """Whether a first response is forced: it stopped by itself and there is room left."""
    return (
        first.finish_reason == "stop"
        and continuation_budget(len(first.token_ids), total_budget) > 0
    )


def continuation_prompt(prompt: Sequence[ChatMessage], response: str) -> list[ChatMessage]:
    """The chat to continue: the original prompt and the forced assistant text."""
    return [*prompt, {"role": "assistant", "content": forced_text(response)}]


def force_budget(
    engine: Engine,
    prompts: Sequence[Sequence[ChatMessage]],
    first: Sequence[Sequence[Completion]],
    params: SamplingParams,
    total_budget: int,
) -> list[list[ForcedSample]]:
    """Force every first response that stopped by itself; `first[i]` are the samples of
    `prompts[i]`, generated with at most B1 tokens. `params` gives temperature, top-p and seed of
    the continuations (its `n` and `max_tokens` are replaced)."""
    by_budget: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for i, samples in enumerate(first):
        for j, sample in enumerate(samples):
            if should_force(sample, total_budget):
                budget = continuation_budget(len(sample.token_ids), total_budget)
                by_budget[budget].append((i, j))
    continued: dict[tuple[int, int], Completion] = {}
    for budget, keys in sorted(by_budget.items()):
        chats = [continuation_prompt(prompts[i], first[i][j].text) for i, j in keys]
        seed = None if params.seed is None else _bucket_seed(params.seed, budget)
        outputs = engine.generate(chats, replace(params, n=1, max_tokens=budget, seed=seed))
        continued.update(zip(keys, (out[0] for out in outputs), strict=True))
    return [
        [_forced_sample(sample, continued.get((i, j))) for j, sample in enumerate(samples)]
        for i, samples in enumerate(first)
    ]


def _forced_sample(first: Completion, continuation: Completion | None) -> ForcedSample:
    first_tokens = len(first.token_ids)
    if continuation is None:
        return ForcedSample(
            first.text, first_tokens, first.finish_reason, first.text, first_tokens, False
        )
    return ForcedSample(
        first_text=first.text,
        first_tokens=first_tokens,
        first_finish=first.finish_reason,
        text=forced_text(first.text) + continuation.text,
        tokens=first_tokens + TRIGGER_TOKENS + len(continuation.token_ids),
        forced=True,
    )


def _bucket_seed(seed: int, budget: int) -> int:
    digest = hashlib.sha256(f"{seed}/budget-forcing/{budget}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
