"""Engines and sampling parameters from a run spec."""

from __future__ import annotations

from collections.abc import Callable

from skillfactory.engines.base import Engine, SamplingParams
from skillfactory.engines.simulated import SeededTextEngine
from skillfactory.engines.vllm_engine import VllmEngine  # optional: vllm
from skillfactory.models.registry import resolve_model
from skillfactory.runspec import (
    EngineSpec,
    RunSpec,
    SamplingSpec,
    SimulatedEngineSpec,
    VllmEngineSpec,
)


def setup_engine(spec: EngineSpec, model: str, seed: int = 0) -> Engine:
    """The engine a run spec asks for, on `model` (a path, hub id or registered short name)."""
    if isinstance(spec, SimulatedEngineSpec):
        return SeededTextEngine(spec.seconds_per_token)
    path = resolve_model(model)
    if isinstance(spec, VllmEngineSpec):
        return VllmEngine(
            path,
            seed=seed,
            dtype=None if spec.dtype == "auto" else spec.dtype,
            max_model_len=spec.max_model_len,
            kv_cache_gib=max(1, round(spec.kv_cache_gib)),
            gpu_memory_utilization=spec.gpu_memory_utilization,
            enforce_eager=spec.enforce_eager,
            tensor_parallel_size=spec.tensor_parallel_size,
            enable_prefix_caching=spec.enable_prefix_caching,
            enable_sleep_mode=spec.enable_sleep_mode,
        )
    from skillfactory.engines.transformers_engine import TransformersEngine  # heavy: torch

    return TransformersEngine(
        path,
        dtype=spec.dtype,
        device=spec.device,
        max_batch_size=spec.max_batch_size,
        compile=spec.compile,
        seed=seed,
    )


def engine_batch_rows(spec: EngineSpec) -> int:
    """Rows (prompts × samples) worth sending an engine in one call: the transformers and
    simulated engines' batch size; vLLM schedules its own batches, so 256 rows."""
    return 256 if isinstance(spec, VllmEngineSpec) else spec.max_batch_size


def spec_engine_factory(spec: RunSpec) -> Callable[[str], Engine]:
    """Engines of a run spec's kind on any model, seeded with the run seed: what the stages of
    an embedded run and the evaluation start."""
    return lambda model: setup_engine(spec.engine, model, spec.seed)


def sampling_params(spec: SamplingSpec, n: int, seed: int | None = None) -> SamplingParams:
    """Engine sampling parameters from a run spec's sampling section."""
    return SamplingParams(
        n=n,
        temperature=spec.temperature,
        top_p=spec.top_p,
        top_k=spec.top_k,
        repetition_penalty=spec.repetition_penalty,
        max_tokens=spec.max_tokens,
        stop=tuple(spec.stop),
        seed=seed,
    )
