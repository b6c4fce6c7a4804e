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
from skillfactory.engines.sampling import candidates, choose_tokens_with_noise, uniform_noise

CACHE_LENGTH_QUANTUM = 256
"""Cache lengths are rounded up to a multiple of this, so few distinct shapes get compiled."""

SYNC_EVERY = 16
"""Decode steps between two looks of the host at the sampled tokens."""


def left_pad(
    sequences: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, padded on the left to the longest sequence."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[i, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


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
        self.step: Callable[..., tuple[torch.Tensor, torch.Tensor]] = self._forward_step
        if compile_step:
            # deferred: heavy or optional (torch)
            import torch._dynamo

            torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
            if backend == "inductor":
                self.step = torch.compile(self._forward_step, mode="reduce-overhead", dynamic=False)
            else:
                self.step = torch.compile(self._forward_step, backend=backend, dynamic=False)

    def weights_changed(self) -> None:
        """Nothing to redo: weights are copied in place, so recorded graphs still see them."""

    def _forward_step(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        mask: torch.Tensor,
        cache: Any,
        uniform: torch.Tensor,
        seen: torch.Tensor | None,
        choice: tuple[float, int, float, float],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decode step: the model on the last tokens, then the choice of the next ones.
        `choice` is (temperature, top_k, top_p, repetition_penalty), plain numbers so that a
        compiled step specializes on them."""
        out = self.model(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=mask,
            past_key_values=cache,
            use_cache=True,
        )
        return choose_tokens_with_noise(out.logits[:, -1, :], uniform, seen, *choice)

    def _buffers(self, batch: int, length: int, vocab: int, device: torch.device) -> Any:
        # deferred: heavy or optional (transformers)
        from transformers import StaticCache

        key = (batch, length)
        if key not in self.caches:
            cache = StaticCache(config=self.model.config, max_cache_len=length)
            seen = torch.zeros((batch, vocab), dtype=torch.bool, device=device)
            torch._dynamo.mark_static_address(seen)
            self.caches[key] = (cache, seen)
        cache, seen = self.caches[key]
        cache.reset()
        seen.zero_()
        return cache, seen

    def decode(
        self,
        rows: list[Any],
        params: SamplingParams,
        streams: torch.Generator | dict[int, torch.Generator],
        watcher: Any,
        pad_id: int,
    ) -> None:
        """Sample until every row has finished (or reached `params.max_tokens`).

        Tokens stay on the device; every `SYNC_EVERY` steps they are copied to the host at once
        and each row is checked for its end (EOS, stop string, length), so the host never waits
        for the device step by step.
        """
        device = next(self.model.parameters()).device
        real = len(rows)
        batch = padded_batch_size(real, self.max_batch_size)
        prompts = [row.prompt_ids for row in rows] + [rows[0].prompt_ids] * (batch - real)
        ids, prompt_mask = left_pad(prompts, pad_id, device)
        width = ids.shape[1]
        length = padded_cache_length(width + params.max_tokens)
        vocab = int(self.model.config.vocab_size)
        cache, seen_buffer = self._buffers(batch, length, vocab, device)
        penalize = params.repetition_penalty != 1.0
        seen = seen_buffer if penalize else None
        if seen is not None:
            seen.scatter_(1, ids, prompt_mask.bool())
        mask = torch.zeros((batch, length), dtype=torch.long, device=device)
        mask[:, :width] = prompt_mask
        position = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids,
            position_ids=position,
            attention_mask=mask[:, :width],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        position = position[:, -1:].clone()
        noise_shape = (batch, candidates(vocab, params.top_k, params.top_p))
        choice = (params.temperature, params.top_k, params.top_p, params.repetition_penalty)
        randomness = (
            streams
            if isinstance(streams, torch.Generator)
            else [streams[r.prompt_index] for r in rows]
        )
        uniform = uniform_noise(noise_shape, randomness, device)
        tokens, logprobs = choose_tokens_with_noise(out.logits[:, -1, :], uniform, seen, *choice)
        block_tokens, block_logprobs = [tokens], [logprobs]
        going = list(range(real))
        for step in range(1, params.max_tokens + 1):
            if step % SYNC_EVERY == 0 or step == params.max_tokens:
                going = record_block(rows, going, block_tokens, block_logprobs, watcher)
                block_tokens, block_logprobs = [], []
                if not going or step == params.max_tokens:
                    return
            if seen is not None:
                seen.scatter_(1, tokens[:, None], True)
            mask[:, width + step - 1] = 1
            position += 1
            uniform = uniform_noise(noise_shape, randomness, device)
            tokens, logprobs = self.step(
                tokens[:, None], position, mask, cache, uniform, seen, choice
            )
            tokens, logprobs = tokens.clone(), logprobs.clone()
            block_tokens.append(tokens)
            block_logprobs.append(logprobs)


def record_block(
    rows: list[Any],
    going: list[int],
    block_tokens: list[torch.Tensor],
    block_logprobs: list[torch.Tensor],
    watcher: Any,
) -> list[int]:
    """Hand a block of steps' tokens to the rows still going; returns those still going after."""
    tokens = torch.stack(block_tokens, dim=1).tolist()
    logprobs = torch.stack(block_logprobs, dim=1).tolist()
    still = []
    for i in going:
        row = rows[i]
        for token, logprob in zip(tokens[i], logprobs[i], strict=True):
            row.tokens.append(token)
            row.logprobs.append(logprob)
            row.finish = watcher.finish_reason(row)
            if row.finish is not None:
                break
        if row.finish is None:
            still.append(i)
    return still
