"""Budget forcing: when a response stops within its first budget, make the model try once more.

A response is first generated with at most B1 tokens. When it stopped by itself (finish reason
"stop", not "length"), the `<sample>` trigger is inserted before its `</think>` (the text from
`</think>` on is dropped) or, without `</think>`, appended; the model then continues that text as
its own assistant message, so that it writes another sample of the answer.

Token accounting: a forced response is charged the tokens of the text the model continues (the
kept first response and the trigger, as the engine tokenizes them: the prompt tokens of the
continuation minus those of the original prompt) plus every continuation token, and this never
exceeds B2. The kept tokens are measured by a one-token greedy probe of the continuation prompts,
since re-tokenized text need not have the token count it was generated with. An engine that
reports no prompt token ids is charged a bound instead: all first-response tokens plus the
trigger's UTF-8 bytes. The continuation may generate what is left, rounded down to a multiple of
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
"""Tokens charged for the inserted text when the engine reports no prompt token ids."""
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
    """Tokens charged against B2 (see the module docstring); `first_tokens` if not forced."""
    forced: bool


def forced_text(response: str) -> str:
    """The assistant text the model continues: the response up to its first `</think>` (all of it
    when it has none), then the trigger, on a line of its own."""
    close = _THINK_CLOSE.search(response)
    kept = response[: close.start()] if close is not None else response
    if kept and not kept.endswith("\n"):
        kept += SEPARATOR
    return kept + TRIGGER


def continuation_budget(used_tokens: int, total_budget: int) -> int:
    """Most tokens a continuation may generate after `used_tokens` (kept text and trigger),
    rounded down to a bucket; 0 or less means there is no room to force."""
    room = total_budget - used_tokens
    step = max(1, total_budget // BUCKETS)
    return room if room < step else room - room % step


def continuation_prompt(prompt: Sequence[ChatMessage], response: str) -> list[ChatMessage]:
    """The chat to continue: the original prompt and the forced assistant text."""
    return [*prompt, {"role": "assistant", "content": forced_text(response)}]


def used_tokens(
    engine: Engine, chats: Sequence[Sequence[ChatMessage]], first: Sequence[Completion]
) -> list[int]:
    """Tokens of the kept text and trigger of each chat (see the module docstring)."""
    probes = engine.generate(chats, SamplingParams(temperature=0.0, max_tokens=1))
    used: list[int] = []
    for probe, sample in zip(probes, first, strict=True):
        continued, original = len(probe[0].prompt_token_ids), len(sample.prompt_token_ids)
        exact = continued > 0 and original > 0
        used.append(continued - original if exact else len(sample.token_ids) + TRIGGER_TOKENS)
    return used


def force_budget(
    engine: Engine,
    prompts: Sequence[Sequence[ChatMessage]],
    first: Sequence[Sequence[Completion]],
    params: SamplingParams,
    total_budget: int,
) -> list[list[ForcedSample]]:
    """Force every first response that stopped by itself (finish "stop", not "length") while
    there is room under `total_budget`; `first[i]` are the samples of `prompts[i]`, generated with
    at most B1 tokens. `params` gives temperature, top-p and seed of the continuations (its `n`
    and `max_tokens` are replaced)."""
    stopped = [
        (i, j)
        for i, row in enumerate(first)
        for j, s in enumerate(row)
        if s.finish_reason == "stop"
    ]
    chats = [continuation_prompt(prompts[i], first[i][j].text) for i, j in stopped]
    used = used_tokens(engine, chats, [first[i][j] for i, j in stopped]) if stopped else []
    continued = continue_within_budget(engine, chats, used, params, total_budget)
    outcome = dict(zip(stopped, zip(continued, used, strict=True), strict=True))
    return [
        [_forced_sample(sample, *outcome.get((i, j), (None, 0))) for j, sample in enumerate(row)]
        for i, row in enumerate(first)
    ]


def continue_within_budget(
    engine: Engine,
    chats: Sequence[Sequence[ChatMessage]],
    used: Sequence[int],
    params: SamplingParams,
    total_budget: int,
) -> list[Completion | None]:
    """One continuation of each chat that has room left (None for the others), generated in one
    engine call per budget bucket."""
    buckets: dict[int, list[int]] = defaultdict(list)
    for index, tokens in enumerate(used):
        budget = continuation_budget(tokens, total_budget)
        if budget > 0:
            buckets[budget].append(index)
    continued: list[Completion | None] = [None] * len(chats)
    for budget, members in sorted(buckets.items()):
        seed = None if params.seed is None else _bucket_seed(params.seed, budget)
        bucket_params = replace(params, n=1, max_tokens=budget, seed=seed)
        outputs = engine.generate([chats[m] for m in members], bucket_params)
        for member, output in zip(members, outputs, strict=True):
            continued[member] = output[0]
    return continued


def _forced_sample(first: Completion, continuation: Completion | None, used: int) -> ForcedSample:
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
        tokens=used + len(continuation.token_ids),
        forced=True,
    )


def _bucket_seed(seed: int, budget: int) -> int:
    digest = hashlib.sha256(f"{seed}/budget-forcing/{budget}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
