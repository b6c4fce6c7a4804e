"""The transformers engine on a tiny config-built model, on CPU, both decode paths.

The static-cache path is the one GPUs use (there compiled as CUDA graphs); here it runs eagerly so
its bookkeeping (padding, cache positions, masks) is checked against a teacher-forced pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skillfactory.engines.base import Completion, Engine, SamplingParams
from skillfactory.engines.static_decode import StaticDecoder
from skillfactory.engines.transformers_engine import TransformersEngine

PROMPTS = [
    [{"role": "user", "content": "What is 3 + 4?"}],
    "the answer is",
    [{"role": "user", "content": "Add 12 and 30, then multiply by 2."}],
]


@pytest.fixture(scope="module", params=["dynamic", "static"])
def engine(request: pytest.FixtureRequest, tiny_model_dir: Path) -> TransformersEngine:
    engine = TransformersEngine(tiny_model_dir, device="cpu", max_batch_size=4)
    if request.param == "static":
        engine._static_decoder = StaticDecoder(engine.model, 4, compile_step=False)
    return engine


def teacher_forced_logprobs(engine: TransformersEngine, completion: Completion) -> list[float]:
    ids = torch.tensor([completion.prompt_token_ids + completion.token_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(engine.model(ids).logits[0].float(), dim=-1)
    start = len(completion.prompt_token_ids) - 1
    return [logprobs[start + j, t].item() for j, t in enumerate(completion.token_ids)]


def test_is_an_engine(engine: TransformersEngine) -> None:
    assert isinstance(engine, Engine)


def test_n_samples_per_prompt_with_matching_logprobs(engine: TransformersEngine) -> None:
    params = SamplingParams(n=3, max_tokens=12, temperature=1.0, seed=3)
    results = engine.generate(PROMPTS, params)
    assert [len(r) for r in results] == [3, 3, 3]
    for prompt, completions in zip(PROMPTS, results, strict=True):
        for c in completions:
            assert c.prompt_token_ids == engine.encode(prompt)
            assert 1 <= len(c.token_ids) <= 12 and len(c.logprobs) == len(c.token_ids)
            assert c.finish_reason in ("stop", "length")
            expected = teacher_forced_logprobs(engine, c)
            assert max(abs(a - b) for a, b in zip(expected, c.logprobs, strict=True)) < 1e-4
    distinct = {tuple(c.token_ids) for c in results[1]}
    assert len(distinct) > 1, "three samples at temperature 1 should not all be equal"


def test_penalized_filtered_sampling_still_reports_raw_logprobs(engine: TransformersEngine) -> None:
    params = SamplingParams(n=2, max_tokens=10, top_k=5, top_p=0.9, repetition_penalty=1.3, seed=1)
    for completions in engine.generate(PROMPTS, params):
        for c in completions:
            expected = teacher_forced_logprobs(engine, c)
            assert max(abs(a - b) for a, b in zip(expected, c.logprobs, strict=True)) < 1e-4


def test_same_seed_same_completions(engine: TransformersEngine) -> None:
    params = SamplingParams(n=2, max_tokens=8, seed=11, top_k=20, top_p=0.9)
    first = engine.generate(PROMPTS[:2], params)
    second = engine.generate(PROMPTS[:2], params)
    assert [[c.token_ids for c in r] for r in first] == [[c.token_ids for c in r] for r in second]


def test_stop_strings_end_the_text(engine: TransformersEngine) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=24)
    (free,) = engine.generate(["the answer is"], greedy)[0]
    stop = free.text[6:9]
    assert len(stop) == 3 and stop.strip(), f"need a printable stop string in {free.text!r}"
    (stopped,) = engine.generate(["the answer is"], SamplingParams(
        temperature=0.0, max_tokens=24, stop=(stop,)))[0]  # fmt: skip
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.find(stop)]
    assert len(stopped.token_ids) < len(free.token_ids)


def test_eos_ends_a_row_and_length_caps_it(engine: TransformersEngine) -> None:
    results = engine.generate(PROMPTS, SamplingParams(n=4, max_tokens=5, seed=0))
    for completions in results:
        for c in completions:
            if c.finish_reason == "length":
                assert len(c.token_ids) == 5
            else:
                assert c.token_ids[-1] in engine.eos_ids


def test_weight_reload_changes_outputs_and_version(
    engine: TransformersEngine, tmp_path: Path
) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=10)
    before = engine.generate(PROMPTS, greedy)
    original = {k: v.clone() for k, v in engine.model.state_dict().items()}
    perturbed = {k: v + 0.5 * torch.randn_like(v) for k, v in original.items()}
    engine.load_weights(perturbed, version=1)
    assert engine.policy_version == 1
    after = engine.generate(PROMPTS, greedy)
    assert [c.token_ids for r in after for c in r] != [c.token_ids for r in before for c in r]
    assert all(c.policy_version == 1 for r in after for c in r)

    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in original.items() if k != "lm_head.weight"},
              str(tmp_path / "model.safetensors"))  # fmt: skip
    engine.load_weights(tmp_path, version=2)
    restored = engine.generate(PROMPTS, greedy)
    assert engine.policy_version == 2
    assert [c.token_ids for r in restored for c in r] == [c.token_ids for r in before for c in r]


def test_weights_that_do_not_fit_are_refused(engine: TransformersEngine) -> None:
    with pytest.raises(ValueError, match="unexpected"):
        engine.load_weights({"no.such.weight": torch.zeros(1)}, version=9)
    assert engine.policy_version != 9
