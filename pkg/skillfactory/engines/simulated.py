"""Simulated engines for benchmarks and tests: a real engine slowed to a fixed time per token
(`TokenDelayEngine`), and a model-free engine whose output is a function of prompt and seed
(`SeededTextEngine`).

A simulated engine speed: a real engine whose calls take at least a fixed time per token.

`TokenDelayEngine(engine, seconds_per_token)` runs the real engine, then sleeps until the call has
lasted `seconds_per_token × the longest completion's tokens` — how a batched decoder's time grows
with the number of decode steps, whatever the batch. It is a **simulation** for one machine:
benchmarks and fault tests use it to make sampling slow and sleep-bound (so several sampler
processes on two cores scale as GPUs would), never for results about the model.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import replace

from skillfactory.engines.base import (
    Completion,
    Engine,
    FinishReason,
    Prompt,
    SamplingParams,
    ShouldStop,
    Weights,
    generate_with,
    prompt_seeds,
)


class TokenDelayEngine:
    """An `Engine` that takes at least `seconds_per_token` per decode step (see the module notes)."""

    def __init__(self, engine: Engine, seconds_per_token: float) -> None:
        if seconds_per_token < 0:
            raise ValueError("seconds_per_token must be ≥ 0")
        self.engine = engine
        self.seconds_per_token = seconds_per_token

    @property
    def policy_version(self) -> int:
        return self.engine.policy_version

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
        *,
        should_stop: ShouldStop | None = None,
    ) -> list[list[Completion]]:
        started = time.perf_counter()
        results = generate_with(self.engine, prompts, params, seeds)
        return decode_for(results, started, self.seconds_per_token, should_stop)

    def load_weights(self, weights: Weights, version: int) -> None:
        self.engine.load_weights(weights, version)

    def close(self) -> None:
        self.engine.close()


STOP_POLL_S = 0.05
"""How often a simulated decode asks `should_stop`."""


def decode_for(
    results: list[list[Completion]],
    started: float,
    seconds_per_token: float,
    should_stop: ShouldStop | None,
) -> list[list[Completion]]:
    """Last until the call has taken `seconds_per_token` × its longest completion's tokens, as a
    batched decoder would; when `should_stop()` turns true first, rows longer than the steps
    decoded so far are cut there with finish reason "abort"."""
    steps = max((len(c.token_ids) for group in results for c in group), default=0)
    end = started + steps * seconds_per_token
    while (left := end - time.perf_counter()) > 0:
        if should_stop is not None and should_stop():
            done = int((time.perf_counter() - started) / seconds_per_token)
            return [[cut(c, done) for c in group] for group in results]
        time.sleep(min(left, STOP_POLL_S) if should_stop is not None else left)
    return results


def cut(completion: Completion, steps: int) -> Completion:
    """`completion` as far as `steps` decode steps got (unchanged if it was done by then)."""
    if len(completion.token_ids) <= steps:
        return completion
    return replace(
        completion,
        token_ids=completion.token_ids[:steps],
        logprobs=completion.logprobs[:steps],
        text="",  # a cut row's text is not known without a tokenizer; nobody reads an aborted one
        finish_reason="abort",
    )


ANSWERS = ("A", "B", "C", "D", "E", *(str(n) for n in range(1, 13)))
"""What the seeded text engine answers: CommonsenseQA letters and small numbers."""


class SeededTextEngine:
    """SIMULATION: an `Engine` whose completions are a function of the prompt and its seed alone
    (per-prompt seeds as the `Engine` notes say: `seeds[i]`, else `params.seed + i`), whatever
    else shares the call. No model runs: a solve prompt gets `… <answer>X</answer>`, a reflection
    prompt (one that asks for a verdict) a critique ending in a verdict, an opened assistant turn a
    short continuation; token ids are the text's bytes, logprobs −1. Each call lasts at least
    `seconds_per_token` × its longest completion's tokens. For tests of determinism across
    replicas and for scaling benchmarks, never for results about a model."""

    def __init__(self, seconds_per_token: float = 0.0) -> None:
        if seconds_per_token < 0:
            raise ValueError("seconds_per_token must be ≥ 0")
        self.seconds_per_token = seconds_per_token
        self._version = 0

    @property
    def policy_version(self) -> int:
        return self._version

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
        *,
        should_stop: ShouldStop | None = None,
    ) -> list[list[Completion]]:
        started = time.perf_counter()
        seeds = seeds if seeds is not None else prompt_seeds(params, len(prompts))
        results = [
            [self._completion(prompt, seed, k, params) for k in range(params.n)]
            for prompt, seed in zip(prompts, seeds or [0] * len(prompts), strict=True)
        ]
        return decode_for(results, started, self.seconds_per_token, should_stop)

    def _completion(self, prompt: Prompt, seed: int, k: int, params: SamplingParams) -> Completion:
        text_of_prompt = (
            prompt if isinstance(prompt, str) else json.dumps(list(prompt), default=str)
        )
        digest = hashlib.sha256(f"{seed}|{k}|{text_of_prompt}".encode()).digest()
        pick = int.from_bytes(digest[:8], "big")
        answer = ANSWERS[pick % len(ANSWERS)]
        continuing = (
            not isinstance(prompt, str) and prompt and prompt[-1].get("role") == "assistant"
        )
        if continuing:
            text = answer
        elif "verdict" in text_of_prompt.lower():
            verdict = "Correct" if pick >> 8 & 1 else "Incorrect"
            text = f"Checking the answer step by step. <verdict>{verdict}</verdict>"
        else:
            text = f"Let me work it out ({pick % 97}). <answer>{answer}</answer>"
        data = list(text.encode())
        finish: FinishReason = "stop"
        if len(data) > params.max_tokens:
            data, finish = data[: params.max_tokens], "length"
            text = bytes(data).decode(errors="ignore")
        return Completion(text, data, [-1.0] * len(data), finish, self._version, [])

    def load_weights(self, weights: Weights, version: int) -> None:
        self._version = version

    def close(self) -> None:
        return None
