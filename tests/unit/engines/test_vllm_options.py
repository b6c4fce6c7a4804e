"""vLLM engine options from the run spec reach `vllm.LLM(...)`, and sleep mode frees the GPU
between rollouts.

STUB: no GPU exists here and starting vLLM's CPU build takes 70–110 s, so these tests replace
the `vllm` module with a recording stand-in (`FakeLLM`): they check what the engine asks vLLM
for, not what vLLM does with it (tests/integration/test_vllm_engine.py starts the real one).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from skillfactory.engines.base import SamplingParams
from skillfactory.engines.setup import setup_engine
from skillfactory.runspec import VllmEngineSpec


class FakeLLM:
    """Records its constructor's options and the sleep/wake calls."""

    instances: list[FakeLLM] = []

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.calls: list[str] = []
        FakeLLM.instances.append(self)

    def get_tokenizer(self) -> Any:
        return types.SimpleNamespace(encode=lambda text, **_: [1, 2, 3])

    def sleep(self, level: int = 1) -> None:
        self.calls.append(f"sleep({level})")

    def wake_up(self) -> None:
        self.calls.append("wake_up")

    def generate(self, requests: Any, sampling: Any, use_tqdm: bool = False) -> list[Any]:
        self.calls.append("generate")
        return []


def _install_fake_vllm(monkeypatch: pytest.MonkeyPatch, *, on_cpu: bool) -> None:
    FakeLLM.instances = []
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM  # type: ignore[attr-defined]
    vllm.SamplingParams = lambda **kwargs: kwargs  # type: ignore[attr-defined]
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: on_cpu)  # type: ignore[attr-defined]
    vllm.platforms = platforms  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")


def test_spec_options_reach_the_llm_constructor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _install_fake_vllm(monkeypatch, on_cpu=False)
    spec = VllmEngineSpec(
        tensor_parallel_size=4,
        gpu_memory_utilization=0.4,
        enable_prefix_caching=False,
        enable_sleep_mode=True,
    )
    engine = setup_engine(spec, str(tmp_path), seed=3)
    (llm,) = FakeLLM.instances
    assert llm.options["tensor_parallel_size"] == 4
    assert llm.options["gpu_memory_utilization"] == 0.4
    assert llm.options["enable_prefix_caching"] is False
    assert llm.options["enable_sleep_mode"] is True
    assert llm.options["seed"] == 3
    assert engine.sleep_mode  # type: ignore[attr-defined]


def test_defaults_reach_the_llm_constructor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _install_fake_vllm(monkeypatch, on_cpu=False)
    setup_engine(VllmEngineSpec(), str(tmp_path))
    (llm,) = FakeLLM.instances
    assert llm.options["tensor_parallel_size"] == 1
    assert llm.options["gpu_memory_utilization"] == 0.85
    assert llm.options["enable_prefix_caching"] is True
    assert "enable_sleep_mode" not in llm.options


def test_sleep_mode_is_refused_on_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _install_fake_vllm(monkeypatch, on_cpu=True)
    with pytest.raises(ValueError, match="enable_sleep_mode needs a GPU"):
        setup_engine(VllmEngineSpec(enable_sleep_mode=True), str(tmp_path))
    assert FakeLLM.instances == []


def test_sleep_then_wake_for_the_next_rollout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _install_fake_vllm(monkeypatch, on_cpu=False)
    engine: Any = setup_engine(VllmEngineSpec(enable_sleep_mode=True), str(tmp_path))
    (llm,) = FakeLLM.instances
    engine.sleep()
    engine.sleep()  # already asleep: no second call
    assert engine.asleep
    engine.generate(["a prompt"], SamplingParams(n=1, max_tokens=4))
    assert llm.calls == ["sleep(1)", "wake_up", "generate"]
    assert not engine.asleep


def test_without_sleep_mode_sleep_is_a_no_op(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _install_fake_vllm(monkeypatch, on_cpu=False)
    engine: Any = setup_engine(VllmEngineSpec(), str(tmp_path))
    engine.sleep()
    engine.wake_up()
    assert FakeLLM.instances[0].calls == []


class SleepyEngine:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def sleep(self) -> None:
        self.calls.append("sleep")

    def wake_up(self) -> None:
        self.calls.append("wake_up")


def test_embedded_rollouts_sleep_the_engine_while_the_learner_trains() -> None:
    import threading

    from skillfactory.stages.rollouts import EmbeddedRollouts

    rollouts = object.__new__(EmbeddedRollouts)  # only the pause/resume state
    rollouts.engine = SleepyEngine()  # type: ignore[assignment]
    rollouts.lock = threading.RLock()
    rollouts.sleeps = True
    rollouts._paused = False
    rollouts.pause()
    sampler_got_engine = threading.Event()

    def sampler() -> None:
        with rollouts.lock:  # what the sampler thread takes around generate
            sampler_got_engine.set()

    thread = threading.Thread(target=sampler)
    thread.start()
    assert not sampler_got_engine.wait(0.2)  # the sampler waits while the learner trains
    rollouts.resume()
    assert sampler_got_engine.wait(5)
    thread.join()
    assert rollouts.engine.calls == ["sleep", "wake_up"]  # type: ignore[attr-defined]
