"""Token choice: penalties and filters on hand-made logits."""

from __future__ import annotations

import math

import pytest
import torch

from skillfactory.engines.base import SamplingParams, truncate_at_stop
from skillfactory.engines.sampling import (
    apply_repetition_penalty,
    choose_tokens,
    choose_tokens_with_noise,
    draw,
)


def test_repetition_penalty_follows_hf_semantics() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    apply_repetition_penalty(logits, seen, 2.0)
    assert logits.tolist() == [[1.0, -4.0, 1.0]]


def _drawn(probs: list[float], top_k: int, top_p: float) -> set[int]:
    scores = torch.tensor([probs]).log().repeat(2000, 1)
    generator = torch.Generator().manual_seed(0)
    return set(draw(scores, top_k, top_p, generator).tolist())


def test_top_k_keeps_the_k_largest() -> None:
    assert _drawn([0.1, 0.4, 0.2, 0.3], top_k=2, top_p=1.0) == {1, 3}


def test_top_p_keeps_the_smallest_set_reaching_the_mass() -> None:
    assert _drawn([0.5, 0.3, 0.15, 0.05], top_k=0, top_p=0.75) == {0, 1}
    assert _drawn([0.5, 0.3, 0.15, 0.05], top_k=0, top_p=0.5) == {0}
    assert _drawn([0.5, 0.3, 0.15, 0.05], top_k=0, top_p=1.0) == {0, 1, 2, 3}


def test_greedy_and_raw_logprobs() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.0, 5.0]])
    params = SamplingParams(temperature=0.0, repetition_penalty=2.0)
    seen = torch.tensor([[False, True, False], [False, False, False]])
    tokens, logprobs = choose_tokens(logits, params, seen, None)
    assert tokens.tolist() == [2, 2]  # the seen 3.0 becomes 1.5, below the unseen 2.0
    expected = torch.log_softmax(logits, -1)[[0, 1], [2, 2]]
    assert torch.allclose(logprobs, expected)


def test_sampling_respects_top_k_over_many_draws() -> None:
    logits = torch.tensor([[0.0, 0.1, 0.2, 5.0, 4.0]]).repeat(500, 1)
    generator = torch.Generator().manual_seed(0)
    tokens, _ = choose_tokens(logits, SamplingParams(top_k=2), None, generator)
    assert set(tokens.tolist()) <= {3, 4} and len(set(tokens.tolist())) == 2


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        ("abc</answer>tail", ("</answer>",), ("abc", True)),
        ("abc", ("x",), ("abc", False)),
        ("a1b2", ("2", "1"), ("a", True)),
        ("abc", (), ("abc", False)),
    ],
)
def test_truncate_at_stop(text: str, stop: tuple[str, ...], expected: tuple[str, bool]) -> None:
    assert truncate_at_stop(text, stop) == expected


def test_bad_sampling_params_are_refused() -> None:
    for bad in ({"n": 0}, {"top_p": 0.0}, {"temperature": -1.0}, {"repetition_penalty": 0.0}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)  # type: ignore[arg-type]
    assert math.isclose(SamplingParams().top_p, 1.0)


def test_gumbel_draw_matches_the_filtered_distribution() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log().repeat(20000, 1)
    uniform = torch.rand((20000, 3), generator=torch.Generator().manual_seed(0))
    tokens, logprobs = choose_tokens_with_noise(logits, uniform, None, 1.0, 3, 1.0, 1.0)
    frequencies = torch.bincount(tokens, minlength=4).float() / len(tokens)
    expected = torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95
    assert torch.allclose(frequencies, expected, atol=0.015)
    assert torch.allclose(logprobs, probs.log()[0][tokens])


def test_gumbel_draw_honours_top_p_and_the_penalty() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(500, 1)
    uniform = torch.rand((500, 4), generator=torch.Generator().manual_seed(1))
    tokens, _ = choose_tokens_with_noise(logits, uniform, None, 1.0, 0, 0.75, 1.0)
    assert set(tokens.tolist()) == {0, 1}
    seen = torch.tensor([[True, False, False, False]]).repeat(500, 1)
    greedy, _ = choose_tokens_with_noise(logits, uniform, seen, 0.0, 0, 1.0, 10.0)
    assert set(greedy.tolist()) == {1}, "token 0's logit -0.69 × 10 falls below token 1's"
