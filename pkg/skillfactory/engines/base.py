"""The engine interface: batched sampling with per-token logprobs and in-place weight reload.

Every engine (transformers on CPU/GPU, vLLM) implements `Engine`; pipelines, samplers and the
rollout service only ever see this interface, as vLLM's API server only sees an engine client.

Seeds: `generate(prompts, params, seeds)` samples prompt i with `seeds[i]` when `seeds` is given,
so that a prompt's completions can be a function of the prompt and its seed alone, whatever else
shares the engine call (the rollout service merges concurrent work into one call). Without
`seeds`, the whole call draws from one stream seeded with `params.seed`. The seed of prompt i of a
call split into one task per prompt is `params.seed + i` (`prompt_seeds`): an engine that honours
per-prompt seeds answers a split call as it answers the whole one. How exactly an engine can
honour them is its own: the simulated engine exactly, the transformers engine with one generator
per prompt (batched floating point may still differ in the last bits), vLLM per request.

Logprobs are those of the sampled tokens under the model's distribution at the sampling
temperature: log softmax(logits / T) over the whole vocabulary (the raw logits at T = 0), before
repetition penalties and top-k/top-p truncation, as TRL and verl compute them in the learner. That
is what a teacher-forced forward pass of the same tokens gives at temperature T
(`grpo.temperature` in the learner), so the importance weights compare the policy that sampled
with the one trained. Truncation is left out on both sides: a token outside the learner's nucleus
would get probability 0. The vLLM engine reports vLLM's `processed_logprobs`, which equal these
without top-k/top-p (GRPO's default); with them they are renormalised over the kept tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

ChatMessage = Mapping[str, object]
Prompt = str | Sequence[ChatMessage]
"""A raw text prompt, or chat messages to which the engine applies the tokenizer's template.
When the last message is the assistant's, the engine continues that message instead of starting
a new turn (how forced suffixes such as an opened `<answer>` tag are completed)."""

FinishReason = Literal["stop", "length", "abort"]
Weights = Mapping[str, "torch.Tensor"] | str | Path
"""A state dict, or a directory of safetensors files (a saved HF model or a weight-store entry)."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: `n` completions per prompt. Defaults are plain sampling at temperature 1."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_tokens < 1:
            raise ValueError("n and max_tokens must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("temperature ≥ 0, 0 < top_p ≤ 1 and top_k ≥ 0 are required")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be positive")


@dataclass
class Completion:
    """One sampled completion. `token_ids` excludes the prompt and any text after a stop string."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason
    policy_version: int
    prompt_token_ids: list[int] = field(default_factory=list)


@runtime_checkable
class Engine(Protocol):
    """What every generation engine offers."""

    @property
    def policy_version(self) -> int:
        """Version of the weights in use: 0 for the loaded model, then what `load_weights` set."""
        ...

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        """`params.n` completions for each prompt, in prompt order; prompt i seeded with
        `seeds[i]` when given (see the module notes)."""
        ...

    def load_weights(self, weights: Weights, version: int) -> None:
        """Replace the weights in place (between requests) and report `version` from now on."""
        ...

    def close(self) -> None:
        """Release the model and any worker processes."""
        ...


def prompt_seeds(params: SamplingParams, count: int) -> list[int] | None:
    """The per-prompt seeds of a call of `count` prompts: `params.seed + i` (None: unseeded)."""
    if params.seed is None:
        return None
    return [params.seed + i for i in range(count)]


ShouldStop = Callable[[], bool]
"""Asked between decode steps by an interruptible engine: True ends every row of the call now,
with finish reason "abort" (its callers are gone: a cancelled or timed-out request)."""


def interruptible(engine: Engine) -> bool:
    """Whether `engine.generate` takes `should_stop=` (the transformers and simulated engines;
    vLLM's offline engine finishes the call it started). Read from the signature, so a subclass
    that overrides `generate` without it is not taken for one."""
    try:
        return "should_stop" in inspect.signature(engine.generate).parameters
    except (TypeError, ValueError):
        return False


def generate_with(
    engine: Engine,
    prompts: Sequence[Prompt],
    params: SamplingParams,
    seeds: Sequence[int] | None,
    should_stop: ShouldStop | None = None,
) -> list[list[Completion]]:
    """`engine.generate`, passing per-prompt seeds only when there are some (engines written
    before seeds existed take two arguments), and `should_stop` to an engine that can stop."""
    if should_stop is not None and interruptible(engine):
        generate: Any = engine.generate
        return list(generate(prompts, params, seeds, should_stop=should_stop))
    if seeds is None:
        return engine.generate(prompts, params)
    return engine.generate(prompts, params, seeds)


def render_chat(tokenizer: Any, messages: Sequence[ChatMessage]) -> str:
    """Chat messages as prompt text: a new assistant turn is opened, or, when the last message is
    the assistant's, that message is left open to be continued."""
    plain = [{k: str(v) for k, v in m.items()} for m in messages]
    if plain and plain[-1].get("role") == "assistant":
        text = tokenizer.apply_chat_template(plain, tokenize=False, continue_final_message=True)
    else:
        text = tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    return str(text)


def encode_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of a prompt as every engine encodes it: text with the tokenizer's special
    tokens, chat messages through its chat template (which adds them itself)."""
    if isinstance(prompt, str):
        return list(tokenizer.encode(prompt))
    return list(tokenizer.encode(render_chat(tokenizer, prompt), add_special_tokens=False))


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` before the first stop string; returns the text and whether one was found."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
