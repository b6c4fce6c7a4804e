"""One decode step's token choice: penalties, temperature, top-k/top-p, then a draw.

Works on a batch of rows at once and returns, with each chosen token, its logprob under the
model's distribution at the sampling temperature, log softmax(logits / T) over the whole
vocabulary, before penalties and top-k/top-p (see `skillfactory.engines.base`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from skillfactory.engines.base import SamplingParams

Randomness = torch.Generator | Sequence[torch.Generator] | None
"""Where draws come from: one stream for every row, or one generator per row (per-prompt seeds)."""


def multinomial(probs: torch.Tensor, randomness: Randomness) -> torch.Tensor:
    """One index per row of `probs` (`[rows, 1]`), each row from its own generator when given."""
    if randomness is None or isinstance(randomness, torch.Generator):
        return torch.multinomial(probs, 1, generator=randomness)
    return torch.cat(
        [torch.multinomial(p[None], 1, generator=g) for p, g in zip(probs, randomness, strict=True)]
    )


def uniform_noise(
    shape: tuple[int, int], randomness: Randomness, device: torch.device, rows: int | None = None
) -> torch.Tensor:
    """`shape` uniform noise; with one generator per row, row r from generator r (rows beyond
    the generators, padding, are zeros and draw nothing)."""
    if randomness is None or isinstance(randomness, torch.Generator):
        return torch.rand(shape, generator=randomness, device=device)
    noise = torch.zeros(shape, device=device)
    for row, generator in enumerate(randomness):
        noise[row] = torch.rand(shape[1], generator=generator, device=device)
    return noise


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> None:
    """In place, Hugging Face semantics: logits of seen tokens are divided by `penalty` when
    positive and multiplied by it when negative. `seen` is a bool mask of shape `logits.shape`."""
    if penalty == 1.0:
        return
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    logits.copy_(torch.where(seen, penalized, logits))


def draw(scores: torch.Tensor, top_k: int, top_p: float, generator: Randomness) -> torch.Tensor:
    """One token per row from softmax(scores) restricted to the top-k and the top-p nucleus.

    The draw happens among the k candidates only (not over the whole vocabulary), which is what
    makes a step cheap with a 50k-token vocabulary.
    """
    vocab = scores.shape[-1]
    k = min(top_k, vocab) if top_k > 0 else vocab
    if k == vocab and top_p >= 1.0:
        probs = torch.softmax(scores, dim=-1)
        return multinomial(probs, generator).squeeze(-1)
    values, indices = torch.topk(scores, k, dim=-1)
    probs = torch.softmax(values, dim=-1)
    if top_p < 1.0:
        mass_before = torch.cumsum(probs, dim=-1) - probs
        probs = probs.masked_fill(mass_before >= top_p, 0.0)
    choice = multinomial(probs, generator)
    return indices.gather(-1, choice).squeeze(-1)


def sampling_logprobs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / T) (the raw distribution at T = 0, greedy): what the learner
    recomputes for the behaviour policy, since it cannot replay penalties or truncation."""
    return torch.log_softmax(logits / temperature if temperature > 0.0 else logits, dim=-1)


def choose_tokens(
    logits: torch.Tensor,
    params: SamplingParams,
    seen: torch.Tensor | None,
    generator: Randomness,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row; returns (tokens, their `sampling_logprobs`), both shape [rows].

    `logits` are the last position's raw logits, shape [rows, vocab]; they are not modified.
    """
    logits = logits.float()
    raw_logprobs = sampling_logprobs(logits, params.temperature)
    scores = logits.clone()
    if seen is not None:
        apply_repetition_penalty(scores, seen, params.repetition_penalty)
    if params.temperature == 0.0:
        tokens = scores.argmax(dim=-1)
    else:
        tokens = draw(scores / params.temperature, params.top_k, params.top_p, generator)
    return tokens, raw_logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def candidates(vocab: int, top_k: int, top_p: float) -> int:
    """How many candidate tokens a draw looks at: top-k, or the whole vocabulary."""
    if 0 < top_k < vocab:
        return top_k
    return vocab


def choose_tokens_with_noise(
    logits: torch.Tensor,
    uniform: torch.Tensor,
    seen: torch.Tensor | None,
    temperature: float,
    top_k: int,
    top_p: float,
    repetition_penalty: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`choose_tokens` without a generator: the randomness comes in as `uniform` noise of shape
    [rows, candidates(...)], and the draw is a Gumbel-max over the filtered candidates.

    Every shape is fixed by the arguments, so a compiled decode step can include the choice and be
    replayed as one CUDA graph.
    """
    logits = logits.float()
    raw_logprobs = sampling_logprobs(logits, temperature)
    scores = logits
    if seen is not None and repetition_penalty != 1.0:
        penalized = torch.where(
            scores > 0, scores / repetition_penalty, scores * repetition_penalty
        )
        scores = torch.where(seen, penalized, scores)
    if temperature == 0.0:
        tokens = scores.argmax(dim=-1)
    else:
        k = candidates(scores.shape[-1], top_k, top_p)
        if k == scores.shape[-1] and top_p >= 1.0:
            values, indices = scores, None
        else:
            values, indices = torch.topk(scores, k, dim=-1)
        log_probs = torch.log_softmax(values / temperature, dim=-1)
        if top_p < 1.0:
            probs = log_probs.exp()
            mass_before = torch.cumsum(probs, dim=-1) - probs
            log_probs = log_probs.masked_fill(mass_before >= top_p, float("-inf"))
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
        choice = (log_probs + gumbel).argmax(dim=-1, keepdim=True)
        tokens = choice.squeeze(-1) if indices is None else indices.gather(-1, choice).squeeze(-1)
    return tokens, raw_logprobs.gather(-1, tokens[:, None]).squeeze(-1)
