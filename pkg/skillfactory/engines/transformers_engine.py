"""The transformers engine: runs any Hugging Face causal LM on CPU or GPU.

Each call groups prompts into batches of at most `max_batch_size` rows (`n` rows per prompt),
left-pads them, runs one prefill per distinct prompt and repeats its KV cache `n` times, then
decodes all rows together:
- on CPU, with a dynamic KV cache from which finished rows are dropped at once, so the work of a
  step shrinks as sequences stop (plain `generate` keeps computing finished rows to the end);
- on GPU, with a static KV cache and the decode step compiled as CUDA graphs
  (`skillfactory.engines.static_decode`), since a 135M model is otherwise bound by kernel launches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from skillfactory.engines.base import (
    Completion,
    FinishReason,
    Prompt,
    SamplingParams,
    ShouldStop,
    Weights,
    encode_prompt,
    truncate_at_stop,
)
from skillfactory.engines.sampling import Randomness, choose_tokens
from skillfactory.engines.static_decode import StaticDecoder, left_pad


@dataclass
class Row:
    """One sequence being decoded: a prompt's tokens and what has been sampled after them."""

    prompt_index: int
    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: FinishReason | None = None


class StopWatcher:
    """Decides when a row is finished: an end-of-sequence token, a stop string, or the length cap.

    Stop strings are looked for in the decoded tail of the row only (a window a few tokens longer
    than the longest stop string), so a step costs the same however long the row has grown.
    """

    def __init__(
        self,
        tokenizer: Any,
        eos_ids: set[int],
        params: SamplingParams,
        should_stop: ShouldStop | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.params = params
        self.window = max((len(s) for s in params.stop), default=0) + 4
        self.should_stop = should_stop

    def finish_reason(self, row: Row) -> FinishReason | None:
        """Why `row` is finished after its latest token, or None if it goes on."""
        if self.should_stop is not None and self.should_stop():
            return "abort"
        if row.tokens[-1] in self.eos_ids:
            return "stop"
        if self.params.stop:
            tail = self.tokenizer.decode(row.tokens[-self.window :], skip_special_tokens=True)
            if truncate_at_stop(tail, self.params.stop)[1]:
                return "stop"
        if len(row.tokens) >= self.params.max_tokens:
            return "length"
        return None


def pick_device(device: str) -> torch.device:
    """`auto` means the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` means bfloat16 on GPU and float32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


class TransformersEngine:
    """An `Engine` over a transformers causal LM (path, hub id or short name already resolved)."""

    def __init__(
        self,
        model: str | Path,
        *,
        dtype: str = "auto",
        device: str = "auto",
        max_batch_size: int = 64,
        compile: bool = True,
        seed: int = 0,
        compile_backend: str = "inductor",
    ) -> None:
        # deferred: heavy or optional (transformers)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model))
        loaded: Any = AutoModelForCausalLM.from_pretrained(str(model), dtype=self.dtype)
        self.model: Any = loaded.to(self.device).eval()
        self.max_batch_size = max_batch_size
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.eos_ids = self._eos_ids()
        self.pad_id = self._pad_id()
        self._version = 0
        self._static_decoder: Any = None
        if compile and self.device.type == "cuda":
            self._static_decoder = StaticDecoder(
                self.model, max_batch_size, backend=compile_backend
            )

    @property
    def policy_version(self) -> int:
        """Version of the weights in use."""
        return self._version

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        eos = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        return eos

    def _pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt; chat messages go through the tokenizer's chat template."""
        return encode_prompt(self.tokenizer, prompt)

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
        *,
        should_stop: ShouldStop | None = None,
    ) -> list[list[Completion]]:
        """`params.n` completions for each prompt, in prompt order; with `seeds`, prompt i's
        rows draw from their own generator seeded with `seeds[i]`; once `should_stop()` is true,
        every row still going ends with finish reason "abort"."""
        encoded = [self.encode(p) for p in prompts]
        results: list[list[Completion]] = [[] for _ in prompts]
        streams = self._streams(params, seeds, len(prompts))
        for batch in self._batches(encoded, params.n):
            self._decode(batch, params, streams, should_stop)
            for row in batch:
                results[row.prompt_index].append(self._completion(row, params))
        return results

    def _streams(
        self, params: SamplingParams, seeds: Sequence[int] | None, count: int
    ) -> torch.Generator | dict[int, torch.Generator]:
        """One generator for the call, or one per prompt."""
        if seeds is not None:
            if len(seeds) != count:
                raise ValueError(f"{len(seeds)} seeds for {count} prompts")
            return {
                i: torch.Generator(device=self.device).manual_seed(s) for i, s in enumerate(seeds)
            }
        if params.seed is not None:
            return torch.Generator(device=self.device).manual_seed(params.seed)
        return self.generator

    def _batches(self, encoded: list[list[int]], n: int) -> Iterator[list[Row]]:
        """Rows grouped so that a batch holds at most `max_batch_size` rows, `n` per prompt
        (split when `n` alone exceeds the limit); prompts of similar length go together."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        rows = [Row(i, encoded[i]) for i in order for _ in range(n)]
        size = max(1, self.max_batch_size)
        for start in range(0, len(rows), size):
            yield rows[start : start + size]

    def _decode(
        self,
        rows: list[Row],
        params: SamplingParams,
        streams: torch.Generator | dict[int, torch.Generator],
        should_stop: ShouldStop | None = None,
    ) -> None:
        watcher = StopWatcher(self.tokenizer, self.eos_ids, params, should_stop)
        if self._static_decoder is not None:
            self._static_decoder.decode(rows, params, streams, watcher, self.pad_id)
        else:
            decode_dynamic(self.model, rows, params, streams, watcher, self.pad_id)

    def _completion(self, row: Row, params: SamplingParams) -> Completion:
        text, _ = truncate_at_stop(
            str(self.tokenizer.decode(row.tokens, skip_special_tokens=True)), params.stop
        )
        return Completion(
            text=text,
            token_ids=row.tokens,
            logprobs=row.logprobs,
            finish_reason=row.finish or "length",
            policy_version=self._version,
            prompt_token_ids=row.prompt_ids,
        )

    def load_weights(self, weights: Weights, version: int) -> None:
        """Copy new weights into the model in place; tied weights may be left out."""
        state = read_weights(weights)
        result = self.model.load_state_dict(state, strict=False, assign=False)
        tied = tied_weight_names(self.model)
        missing = [k for k in result.missing_keys if k not in tied]
        if result.unexpected_keys or missing:
            raise ValueError(
                f"weights do not fit the model: unexpected {result.unexpected_keys[:5]}, "
                f"missing {missing[:5]}"
            )
        if self._static_decoder is not None:
            self._static_decoder.weights_changed()
        self._version = version

    def close(self) -> None:
        """Drop the model (frees GPU memory once nothing else holds it)."""
        self._static_decoder = None
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def row_randomness(
    streams: torch.Generator | dict[int, torch.Generator], rows: Sequence[Row]
) -> Randomness:
    """The draw source of each row: the call's generator, or its prompt's."""
    if isinstance(streams, torch.Generator):
        return streams
    return [streams[row.prompt_index] for row in rows]


def tied_weight_names(model: Any) -> set[str]:
    """Weights that share storage with another and so may be missing from a state dict."""
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if getattr(model.config, "tie_word_embeddings", False):
        tied.add("lm_head.weight")
    return tied


def read_weights(weights: Weights) -> dict[str, torch.Tensor]:
    """A state dict from a mapping, or from every `*.safetensors` file of a directory."""
    if isinstance(weights, str | Path):
        # deferred: heavy or optional (safetensors)
        from safetensors.torch import load_file

        files = sorted(Path(weights).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors files in {weights}")
        state: dict[str, torch.Tensor] = {}
        for file in files:
            state.update(load_file(file))
        return state
    return dict(weights)


def unique_prompts(rows: list[Row]) -> tuple[list[list[int]], torch.Tensor]:
    """The distinct prompts of consecutive rows, and how many rows repeat each."""
    prompts: list[list[int]] = []
    counts: list[int] = []
    for i, row in enumerate(rows):
        if i > 0 and row.prompt_index == rows[i - 1].prompt_index:
            counts[-1] += 1
        else:
            prompts.append(row.prompt_ids)
            counts.append(1)
    return prompts, torch.tensor(counts)


def seen_tokens(rows: list[Row], vocab: int, device: torch.device) -> torch.Tensor:
    """Bool mask [rows, vocab] of the tokens each row's prompt contains (repetition penalty)."""
    seen = torch.zeros((len(rows), vocab), dtype=torch.bool, device=device)
    for i, row in enumerate(rows):
        seen[i, torch.tensor(row.prompt_ids, device=device)] = True
    return seen


def record_step(
    rows: list[Row], tokens: torch.Tensor, logprobs: torch.Tensor, watcher: StopWatcher
) -> list[int]:
    """Append each row's new token and logprob; returns the positions of rows still going."""
    going = []
    for i, (token, logprob) in enumerate(zip(tokens.tolist(), logprobs.tolist(), strict=True)):
        row = rows[i]
        row.tokens.append(token)
        row.logprobs.append(logprob)
        row.finish = watcher.finish_reason(row)
        if row.finish is None:
            going.append(i)
    return going


def decode_dynamic(
    model: Any,
    rows: list[Row],
    params: SamplingParams,
    streams: torch.Generator | dict[int, torch.Generator],
    watcher: StopWatcher,
    pad_id: int,
) -> None:
    """Decode `rows` in place with a dynamic KV cache, dropping finished rows after each step;
    `streams` is one generator, or one per prompt index."""
    # deferred: heavy or optional (transformers)
    from transformers import DynamicCache

    device = next(model.parameters()).device
    prompts, repeats = unique_prompts(rows)
    ids, mask = left_pad(prompts, pad_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    expand = torch.arange(len(prompts), device=device).repeat_interleave(repeats.to(device))
    cache.batch_select_indices(expand)
    logits = out.logits[:, -1, :][expand]
    mask, last_position = mask[expand], positions[:, -1][expand]
    penalize = params.repetition_penalty != 1.0
    seen = seen_tokens(rows, logits.shape[-1], device) if penalize else None
    active = list(rows)
    while True:
        tokens, logprobs = choose_tokens(logits, params, seen, row_randomness(streams, active))
        going = record_step(active, tokens, logprobs, watcher)
        if not going:
            return
        if len(going) < len(active):
            keep = torch.tensor(going, device=device)
            cache.batch_select_indices(keep)
            tokens, mask, last_position = tokens[keep], mask[keep], last_position[keep]
            seen = seen[keep] if seen is not None else None
            active = [active[i] for i in going]
        if seen is not None:
            seen.scatter_(1, tokens[:, None], True)
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
        last_position = last_position + 1
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=last_position[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :]
