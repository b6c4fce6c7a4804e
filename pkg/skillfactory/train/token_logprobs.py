"""Per-token logprobs of completions without a `[tokens × vocab]` logits tensor.

The learner needs log π(token) for every completion token, and the old path
(`rollout_batch.completion_logprobs`) gets it from the model's logits: `[B, C, vocab]` at once,
and their gradient in backward — in fp32 at Qwen2.5's vocabulary of 151,936 that is 0.6 MB per
token, 2.5 GB for a 4,096-token micro-batch, several times over. Here the model runs up to its
final hidden states (`[B, C, hidden]`, small), and the head is applied `chunk_tokens` tokens at a
time:

    for each chunk of n tokens:   logits = head(h)              [n, vocab]   (model dtype)
                                  lse    = logsumexp(logits)    fp32, kept (n floats)
                                  logp   = logits[token] − lse  fp32, kept
                                  entropy = lse − Σ softmax·logits   (optional, no gradient)

and the logits are dropped before the next chunk. Backward (`_ChunkedHeadLogprobs.backward`)
recomputes each chunk's logits from the saved hidden states under the autocast state of the
forward, forms the gradient of the logits in place in one buffer,

    ∂logp/∂logits = g · (onehot(token) − softmax(logits)),    softmax = exp(logits − lse)

and pulls it through the head with `torch.autograd.grad`, which gives the gradient of the chunk's
hidden states and of the head's parameters (summed over chunks, returned to autograd as the
gradient of the parameters, which the Function takes as inputs). So at any time one buffer of one
chunk's logits exists (the logsumexp and the gradient are formed in it in place; a second buffer
for the entropy; the head's own bf16 output besides, under autocast), whatever the micro-batch
size. The log-softmax math is fp32 (or wider) even when the hidden states and the head are bf16,
as in the old path.

Prior art, for comparison: prime-rl swaps the model's `lm_head` for a module that returns logprobs
and entropy from inside a patched forward (token chunks, each over vocabulary slices of 8,192 with
an online logsumexp) and recomputes the logits in backward from the weight matrix; Liger's fused
linear cross-entropy computes the gradient already in forward, which a loss linear in the logprobs
allows and the PPO loss does not. Here the model stays a stock Hugging Face model (no swapped
module, no patched forward) and the head is only ever called.

Where the hidden states come from: the model's own forward runs (so FSDP2's root hooks gather the
embeddings, norm and head as usual) with `logits_to_keep` an empty index tensor, so HF's causal LMs
compute no logits at all, and a forward hook on `model.get_decoder()` takes its output, the
normalised final hidden states. The head is `model.get_output_embeddings()`, called as a module (a
tied head is the embedding matrix; nothing here touches weight tensors). Under FSDP2 the head must
belong to the root unit, as `train.parallel.shard_model` does: the root keeps its parameters
unsharded from forward until its post-backward, so the head can run again in backward.

Only real completion tokens go through the head (`skip_padding`, default on); padded positions of
the `[B, C]` result are 0 and carry no gradient. The two entry points mirror the old ones and take
the same `RolloutBatch`: `chunked_full_sequence_logprobs` (every full sequence in one forward) and
`chunked_shared_prefix_logprobs` (each group's prompt once, its KV cache repeated for the group's
completions; see `rollout_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from skillfactory.train.rollout_batch import RolloutBatch

DEFAULT_CHUNK_TOKENS = 1024
"""Tokens whose logits exist at a time (the run spec's `grpo.logprob_chunk_tokens` default)."""


@dataclass(frozen=True)
class TokenLogprobs:
    """Logprobs of some tokens, and the entropy of the distributions they were drawn from."""

    logprobs: Tensor
    """log π(token), fp32 (or wider), differentiable; 0 where a position was skipped."""
    entropy: Tensor | None
    """−Σ π log π per position, fp32, detached (a metric); None unless asked for."""


@dataclass(frozen=True)
class _AutocastState:
    device_type: str
    enabled: bool
    dtype: torch.dtype

    @classmethod
    def current(cls, device_type: str) -> _AutocastState:
        return cls(
            device_type,
            torch.is_autocast_enabled(device_type),
            torch.get_autocast_dtype(device_type),
        )

    def context(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)


class _ChunkedHeadLogprobs(torch.autograd.Function):
    """`head(hidden)` → log-softmax → gather, `chunk` rows at a time, recomputed in backward.

    Inputs: hidden `[N, H]`, token ids `[N]`, the head module, the chunk size, the autocast state
    of the forward, whether to compute the entropy, then the head's trainable parameters (declared
    so that autograd asks this Function for their gradient). Outputs: logprobs `[N]` and entropy
    `[N]` (empty when not asked for; never differentiable).
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        token_ids: Tensor,
        head: torch.nn.Module,
        chunk: int,
        autocast: _AutocastState,
        with_entropy: bool,
        *params: Tensor,
    ) -> tuple[Tensor, Tensor]:
        logprobs, normalisers, entropy = [], [], []
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            # Forward runs without autograd, so the logits buffer is reused in place: the
            # logsumexp costs no second [n, vocab] tensor (the entropy one).
            logits = head(hidden[rows])
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            picked = logits.gather(-1, token_ids[rows, None]).squeeze(-1)
            top = logits.amax(dim=-1, keepdim=True)
            shifted = logits.sub_(top)
            if with_entropy:
                # H = log Σe − Σ e·(x − max) / Σe, with e = exp(x − max)
                exp = shifted.exp()
                total = exp.sum(dim=-1)
                weighted = exp.mul_(shifted).sum(dim=-1)
                entropy.append(total.log() - weighted / total)
                del exp
            else:
                total = shifted.exp_().sum(dim=-1)
            lse = top.squeeze(-1) + total.log()
            logprobs.append(picked - lse)
            normalisers.append(lse)
            del logits, shifted
        empty = hidden.new_zeros(0, dtype=torch.float32)
        normaliser = torch.cat(normalisers) if normalisers else empty
        ctx.save_for_backward(hidden, token_ids, normaliser)
        ctx.head, ctx.chunk, ctx.autocast, ctx.params = head, chunk, autocast, params
        entropies = torch.cat(entropy) if entropy else empty.to(normaliser.dtype)
        ctx.mark_non_differentiable(entropies)
        return (torch.cat(logprobs) if logprobs else empty), entropies

    @staticmethod
    def backward(
        ctx: Any, grad_logprobs: Tensor, grad_entropy: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        hidden, token_ids, normalisers = ctx.saved_tensors
        head: torch.nn.Module = ctx.head
        params: tuple[Tensor, ...] = ctx.params
        want_hidden = ctx.needs_input_grad[0]
        wanted = [p for p, need in zip(params, ctx.needs_input_grad[6:], strict=True) if need]
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_params: list[Tensor | None] = [None] * len(wanted)
        for start in range(0, hidden.shape[0], ctx.chunk):
            end = min(start + ctx.chunk, hidden.shape[0])
            with torch.enable_grad(), ctx.autocast.context():
                rows = hidden[start:end].detach().requires_grad_(want_hidden)
                logits = head(rows)
            # The logits' gradient, built in place in their own buffer (an fp32 head: `.to` is a
            # no-op and the buffer is the logits'; the head's backward does not read its output,
            # and autograd's version counter would refuse a head whose backward did).
            grad = logits.detach().to(normalisers.dtype)
            grad.sub_(normalisers[start:end, None]).exp_()  # softmax
            upstream = grad_logprobs[start:end, None].to(grad.dtype)
            grad.mul_(-upstream).scatter_add_(-1, token_ids[start:end, None], upstream)
            inputs = ([rows] if want_hidden else []) + wanted
            grads = torch.autograd.grad(logits, inputs, grad.to(logits.dtype))
            del logits, grad
            if want_hidden:
                assert grad_hidden is not None
                grad_hidden[start:end] = grads[0]
                grads = grads[1:]
            value = None  # a frozen head (LoRA) has no parameter gradient
            for index, value in enumerate(grads):
                previous = grad_params[index]
                grad_params[index] = value if previous is None else previous.add_(value)
            del grads, value  # before the next chunk's gradient exists: one head-sized buffer
        filled = iter(grad_params)
        per_param = [next(filled) if need else None for need in ctx.needs_input_grad[6:]]
        return (grad_hidden, None, None, None, None, None, *per_param)


class TemperatureHead(torch.nn.Module):
    """`head(hidden) / temperature`: the logits of the sampling distribution (TRL and verl divide
    the logits by the rollout temperature before the log-softmax). Divides in place when autograd
    is off (the chunked forward), so no second logits buffer exists."""

    def __init__(self, head: torch.nn.Module, temperature: float) -> None:
        super().__init__()
        if temperature <= 0.0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.head = head
        self.inverse = 1.0 / temperature

    def forward(self, hidden: Tensor) -> Tensor:
        logits: Tensor = self.head(hidden)
        return logits * self.inverse if torch.is_grad_enabled() else logits.mul_(self.inverse)


def token_logprobs(
    hidden: Tensor,
    head: torch.nn.Module,
    token_ids: Tensor,
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    with_entropy: bool = False,
    temperature: float = 1.0,
) -> TokenLogprobs:
    """log softmax(head(hidden) / temperature)[token] for `[..., H]` hidden states and `[...]`
    token ids, with at most `chunk_tokens` rows of logits at a time in forward and backward
    (module docstring); the entropy is that of the same temperature-scaled distribution.

    Gradients reach `hidden` and the head's trainable parameters; the autocast state at the call
    is the one the head runs under, in backward too."""
    if temperature != 1.0:
        head = TemperatureHead(head, temperature)
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    if hidden.shape[:-1] != token_ids.shape:
        raise ValueError(
            f"hidden states {tuple(hidden.shape)} do not match token ids {tuple(token_ids.shape)}"
        )
    shape = token_ids.shape
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_ids = token_ids.reshape(-1).to(torch.long)
    params = [p for p in head.parameters() if p.requires_grad]
    autocast = _AutocastState.current(hidden.device.type)
    logprobs, entropy = _ChunkedHeadLogprobs.apply(
        flat_hidden, flat_ids, head, chunk_tokens, autocast, with_entropy, *params
    )
    return TokenLogprobs(
        logprobs=logprobs.reshape(shape),
        entropy=entropy.reshape(shape) if with_entropy else None,
    )


def output_head(model: torch.nn.Module) -> torch.nn.Module:
    """The module that maps final hidden states to logits (`lm_head`; for tied embeddings it
    shares its weight with the input embedding)."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else getattr(model, "lm_head", None)
    if not isinstance(head, torch.nn.Module):
        raise TypeError(f"{type(model).__name__} has no output head (get_output_embeddings)")
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if softcap:
        raise NotImplementedError(
            f"{type(model).__name__} caps its logits after the head (final_logit_softcapping="
            f"{softcap}); chunked logprobs apply the head alone"
        )
    return head


def final_hidden_states(model: torch.nn.Module, **inputs: Any) -> tuple[Tensor, Any]:
    """Run the model's own forward on `inputs` without computing logits, and return the decoder's
    output (normalised final hidden states, `[B, T, H]`) with the model's output (for its KV
    cache)."""
    get = getattr(model, "get_decoder", None)
    decoder = get() if callable(get) else getattr(model, "model", None)
    if not isinstance(decoder, torch.nn.Module):
        raise TypeError(f"{type(model).__name__} has no decoder (get_decoder)")
    captured: list[Tensor] = []

    def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
        hidden = getattr(output, "last_hidden_state", None)
        captured.append(hidden if hidden is not None else output[0])

    reference = inputs["input_ids"]
    no_logits = torch.empty(0, dtype=torch.long, device=reference.device)
    handle = decoder.register_forward_hook(keep)
    try:
        output = model(**inputs, logits_to_keep=no_logits)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"expected one decoder call in the forward, saw {len(captured)}")
    return captured[0], output


def completion_hidden_states(
    model: torch.nn.Module, batch: RolloutBatch, *, shared_prefix: bool
) -> Tensor:
    """`[B, C, H]`: the final hidden state that predicts each completion token (the one at the
    position before it), from full sequences or with each group's prompt run once."""
    if shared_prefix:
        return _shared_prefix_hidden_states(model, batch)
    return _full_sequence_hidden_states(model, batch)


def _full_sequence_hidden_states(model: torch.nn.Module, batch: RolloutBatch) -> Tensor:
    prompt_len = batch.prompt_ids.shape[1]
    completion_len = batch.completion_ids.shape[1]
    hidden, _ = final_hidden_states(
        model,
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    return hidden[:, prompt_len - 1 : prompt_len + completion_len - 1]


def _shared_prefix_hidden_states(model: torch.nn.Module, batch: RolloutBatch) -> Tensor:
    if batch.group_size < 1:
        raise ValueError("the shared-prefix path needs groups of equal size (group_size ≥ 1)")
    prompt_len = batch.prompt_ids.shape[1]
    prompt_hidden, prompt = final_hidden_states(
        model,
        input_ids=batch.prompt_ids,
        attention_mask=batch.prompt_mask,
        position_ids=batch.position_ids[:: batch.group_size, :prompt_len],
        use_cache=True,
    )
    cache = prompt.past_key_values
    cache.batch_repeat_interleave(batch.group_size)
    completion_hidden, _ = final_hidden_states(
        model,
        input_ids=batch.completion_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids[:, prompt_len:],
        past_key_values=cache,
        use_cache=True,
    )
    first = prompt_hidden[:, -1:, :].repeat_interleave(batch.group_size, dim=0)
    return torch.cat([first, completion_hidden[:, :-1, :]], dim=1)


def chunked_completion_logprobs(
    model: torch.nn.Module,
    batch: RolloutBatch,
    *,
    shared_prefix: bool = True,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    with_entropy: bool = False,
    skip_padding: bool = True,
    temperature: float = 1.0,
) -> TokenLogprobs:
    """`[B, C]` logprobs (and entropies) of the completion tokens under `model` at the sampling
    `temperature` (logits / T, as the engines report them), `chunk_tokens` tokens of logits at a
    time; the
    prompt runs once per group when the groups allow it and `shared_prefix` is on (the choice
    `rollout_batch.completion_logprobs` makes). With `skip_padding` only real completion tokens
    go through the head and padded positions are 0; without, every position is computed (the old
    path's values everywhere)."""
    shared = shared_prefix and batch.group_size > 1
    hidden = completion_hidden_states(model, batch, shared_prefix=shared)
    return completion_token_logprobs(
        hidden,
        output_head(model),
        batch,
        chunk_tokens=chunk_tokens,
        with_entropy=with_entropy,
        skip_padding=skip_padding,
        temperature=temperature,
    )


def chunked_full_sequence_logprobs(
    model: torch.nn.Module, batch: RolloutBatch, *, chunk_tokens: int = DEFAULT_CHUNK_TOKENS
) -> Tensor:
    """`[B, C]` completion logprobs from one forward over every full sequence: the chunked
    counterpart of `rollout_batch.full_sequence_logprobs` (0 on padding)."""
    hidden = completion_hidden_states(model, batch, shared_prefix=False)
    head = output_head(model)
    return completion_token_logprobs(hidden, head, batch, chunk_tokens=chunk_tokens).logprobs


def chunked_shared_prefix_logprobs(
    model: torch.nn.Module, batch: RolloutBatch, *, chunk_tokens: int = DEFAULT_CHUNK_TOKENS
) -> Tensor:
    """`[B, C]` completion logprobs with each group's prompt run once (its KV cache repeated for
    the group's completions): the chunked counterpart of `rollout_batch.shared_prefix_logprobs`
    (0 on padding)."""
    hidden = completion_hidden_states(model, batch, shared_prefix=True)
    head = output_head(model)
    return completion_token_logprobs(hidden, head, batch, chunk_tokens=chunk_tokens).logprobs


def completion_token_logprobs(
    hidden: Tensor,
    head: torch.nn.Module,
    batch: RolloutBatch,
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    with_entropy: bool = False,
    skip_padding: bool = True,
    temperature: float = 1.0,
) -> TokenLogprobs:
    """`token_logprobs` of `batch`'s completion tokens from their `[B, C, H]` hidden states
    (`completion_hidden_states`), on real tokens only when `skip_padding` (0 elsewhere)."""
    if not skip_padding:
        return token_logprobs(
            hidden,
            head,
            batch.completion_ids,
            chunk_tokens=chunk_tokens,
            with_entropy=with_entropy,
            temperature=temperature,
        )
    mask = batch.completion_mask.bool()
    picked = token_logprobs(
        hidden[mask],
        head,
        batch.completion_ids[mask],
        chunk_tokens=chunk_tokens,
        with_entropy=with_entropy,
        temperature=temperature,
    )
    return TokenLogprobs(
        logprobs=_scatter(picked.logprobs, mask),
        entropy=None if picked.entropy is None else _scatter(picked.entropy, mask),
    )


def _scatter(values: Tensor, mask: Tensor) -> Tensor:
    """`values` (one per True of `mask`) at the True positions of a zero `mask`-shaped tensor."""
    zeros = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    return zeros.masked_scatter(mask, values)
