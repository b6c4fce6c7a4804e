"""A simulated engine speed: a real engine whose calls take at least a fixed time per token.

`TokenDelayEngine(engine, seconds_per_token)` runs the real engine, then sleeps until the call has
lasted `seconds_per_token × the longest completion's tokens` — how a batched decoder's time grows
with the number of decode steps, whatever the batch. It is a **simulation** for one machine:
benchmarks and fault tests use it to make sampling slow and sleep-bound (so several sampler
processes on two cores scale as GPUs would), never for results about the model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from skillfactory.engines.base import Completion, Engine, Prompt, SamplingParams, Weights


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

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        started = time.perf_counter()
        results = self.engine.generate(prompts, params)
        steps = max((len(c.token_ids) for group in results for c in group), default=0)
        remaining = steps * self.seconds_per_token - (time.perf_counter() - started)
        if remaining > 0:
            time.sleep(remaining)
        return results

    def load_weights(self, weights: Weights, version: int) -> None:
        self.engine.load_weights(weights, version)

    def close(self) -> None:
        self.engine.close()
