"""Decoding over a static KV cache with the decode step compiled as CUDA graphs (GPU path).

A small model decoding on a GPU spends its time launching kernels, not computing: hundreds of
launches per step at any batch size. Here every tensor a decode step touches has a fixed shape and
address (batch padded to a power of two, cache length rounded up), so `torch.compile` with
`mode="reduce-overhead"` records the whole step once per shape and replays it as one CUDA graph.
Prefill runs eagerly. Caches are kept per shape and reset between calls, which keeps their
addresses and so the recorded graphs valid; weight reloads copy in place for the same reason.

On CPU (`compile_step=False`) the same code runs eagerly, which is how tests check it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from skillfactory.engines.base import SamplingParams
from skillfactory.engines.sampling import choose_tokens

CACHE_LENGTH_QUANTUM = 256
"""Cache lengths are rounded up to a multiple of this, so few distinct shapes get compiled."""


def padded_batch_size(rows: int, limit: int) -> int:
    """The power of two at or above `rows` (at most `limit`, at least `rows`)."""
    size = 1
    while size < rows:
        size *= 2
    return max(rows, min(size, limit))


def padded_cache_length(tokens: int) -> int:
    """`tokens` rounded up to a multiple of `CACHE_LENGTH_QUANTUM`."""
    return -(-tokens // CACHE_LENGTH_QUANTUM) * CACHE_LENGTH_QUANTUM


class StaticDecoder:
    """Decodes rows of `transformers_engine.Row` in place over a static cache."""

    def __init__(
        self,
        model: Any,
        max_batch_size: int,
        compile_step: bool = True,
        backend: str = "inductor",
    ) -> None:
        """`backend` "inductor" fuses kernels and replays CUDA graphs (slow to compile);
        "cudagraphs" only records and replays the step's kernels (compiles in seconds)."""
        self.model = model
        self.max_batch_size = max_batch_size
        self.caches: dict[tuple[int, int], Any] = {}
        self.step: Callable[..., torch.Tensor] = self._forward_step
        if compile_step:
            import torch._dynamo

            torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
            if backend == "inductor":
                self.step = torch.compile(self._forward_step, mode="reduce-overhead", dynamic=False)
            else:
                self.step = torch.compile(self._forward_step, backend=backend, dynamic=False)

    def weights_changed(self) -> None:
        """Nothing to redo: weights are copied in place, so recorded graphs still see them."""

    def _forward_step(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
        )
        return out.logits[:, -1, :]

    def _cache(self, batch: int, length: int) -> Any:
        from transformers import StaticCache

        key = (batch, length)
        if key not in self.caches:
            self.caches[key] = StaticCache(config=self.model.config, max_cache_len=length)
        else:
            self.caches[key].reset()
        return self.caches[key]

    def decode(
        self,
        rows: list[Any],
        params: SamplingParams,
        generator: torch.Generator,
        watcher: Any,
        pad_id: int,
    ) -> None:
        """Sample until every row has finished (or reached `params.max_tokens`)."""
        from skillfactory.engines.transformers_engine import left_pad, record_step, seen_tokens

        device = next(self.model.parameters()).device
        real = len(rows)
        batch = padded_batch_size(real, self.max_batch_size)
        prompts = [row.prompt_ids for row in rows] + [rows[0].prompt_ids] * (batch - real)
        ids, prompt_mask = left_pad(prompts, pad_id, device)
        width = ids.shape[1]
        length = padded_cache_length(width + params.max_tokens)
        cache = self._cache(batch, length)
        mask = torch.zeros((batch, length), dtype=torch.long, device=device)
        mask[:, :width] = prompt_mask
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids,
            position_ids=positions,
            attention_mask=mask[:, :width],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :]
        position = positions[:, -1:].clone()
        seen = None
        if params.repetition_penalty != 1.0:
            seen = seen_tokens(rows + rows[:1] * (batch - real), logits.shape[-1], device)
        going = list(range(real))
        for step in range(params.max_tokens):
            tokens, logprobs = choose_tokens(logits, params, seen, generator)
            still = record_step([rows[i] for i in going], tokens[going], logprobs[going], watcher)
            going = [going[i] for i in still]
            if not going:
                return
            if seen is not None:
                seen.scatter_(1, tokens[:, None], True)
            mask[:, width + step] = 1
            position += 1
            logits = self.step(tokens[:, None], position, mask, cache).clone()
