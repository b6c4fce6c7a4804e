"""Budget forcing: where the trigger goes, the B2 limit, and which responses are forced.

`ScriptedEngine` is a fake that implements the `Engine` protocol and returns scripted texts: fine
here, since what is tested is the forcing logic around the engine, not generation.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from skillfactory.engines.base import Completion, Engine, FinishReason, Prompt, SamplingParams
from skillfactory.eval.budget_forcing import (
    TRIGGER,
    TRIGGER_TOKENS,
    continuation_budget,
    force_budget,
    forced_text,
)

PROMPT = [{"role": "user", "content": "What is 6 * 7?"}]


def _completion(text: str, tokens: int, finish: FinishReason) -> Completion:
    return Completion(text, list(range(tokens)), [0.0] * tokens, finish, 0)


class ScriptedEngine:
    """Continues every prompt with `text`, generating `max_tokens` tokens (finish "length")."""

    def __init__(self, text: str = "<answer>42</answer>\n</sample>") -> None:
        self.text = text
        self.calls: list[tuple[list[Prompt], SamplingParams]] = []

    @property
    def policy_version(self) -> int:
        return 0

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((list(prompts), params))
        return [[_completion(self.text, params.max_tokens, "length")] for _ in prompts]

    def load_weights(self, weights: object, version: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def test_scripted_engine_is_an_engine() -> None:
    assert isinstance(ScriptedEngine(), Engine)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # before </think>, dropping it and what follows
        (
            "<think>\n<sample>a</sample>\n</think>\n<answer>1</answer>",
            "<think>\n<sample>a</sample>\n" + TRIGGER,
        ),
        # a line of its own when the kept text does not end one; tolerant tag spelling
        ("<think>x</ Think >tail", "<think>x\n" + TRIGGER),
        # the first </think> closes the thinking
        ("a</think>b</think>c", "a\n" + TRIGGER),
        # no </think>: appended
        ("I think it is <answer>5</answer>", "I think it is <answer>5</answer>\n" + TRIGGER),
        ("done\n", "done\n" + TRIGGER),
        ("", TRIGGER),
    ],
)
def test_trigger_goes_before_think_close_or_at_the_end(response: str, expected: str) -> None:
    assert forced_text(response) == expected


def test_a_stopped_response_is_continued_as_the_assistant_message() -> None:
    engine = ScriptedEngine()
    first = [
        [
            _completion(
                "<think>\nguess <answer>41</answer>\n</think>\n<answer>41</answer>", 20, "stop"
            )
        ]
    ]
    params = SamplingParams(temperature=0.7, top_p=0.8, max_tokens=50, seed=3)
    [[sample]] = force_budget(engine, [PROMPT], first, params, total_budget=100)

    [(prompts, used)] = engine.calls
    assert prompts == [
        [
            *PROMPT,
            {"role": "assistant", "content": "<think>\nguess <answer>41</answer>\n" + TRIGGER},
        ]
    ]
    assert (used.n, used.temperature, used.top_p) == (1, 0.7, 0.8)
    assert sample.forced
    assert (
        sample.text
        == "<think>\nguess <answer>41</answer>\n<sample>\n<answer>42</answer>\n</sample>"
    )
    assert sample.first_tokens == 20
    assert sample.tokens == 20 + TRIGGER_TOKENS + used.max_tokens <= 100


def test_a_length_finished_response_is_not_forced() -> None:
    engine = ScriptedEngine()
    first = [
        [_completion("<answer>41", 50, "length"), _completion("<answer>41</answer>", 5, "abort")]
    ]
    [samples] = force_budget(engine, [PROMPT], first, SamplingParams(max_tokens=50), 100)
    assert engine.calls == []
    assert [s.forced for s in samples] == [False, False]
    assert [(s.text, s.tokens) for s in samples] == [("<answer>41", 50), ("<answer>41</answer>", 5)]


@pytest.mark.parametrize("total_budget", [1, 7, 16, 100, 1000, 4097])
def test_never_beyond_the_total_budget(total_budget: int) -> None:
    for first_tokens in range(0, total_budget + 1, max(1, total_budget // 50)):
        budget = continuation_budget(first_tokens, total_budget)
        assert budget <= 0 or first_tokens + TRIGGER_TOKENS + budget <= total_budget
    engine = ScriptedEngine()
    first = [
        [_completion("x", t, "stop") for t in range(0, total_budget + 1, max(1, total_budget // 7))]
    ]
    [samples] = force_budget(
        engine, [PROMPT], first, SamplingParams(max_tokens=total_budget), total_budget
    )
    assert all(s.tokens <= total_budget for s in samples)
    assert all(s.forced == (total_budget - s.first_tokens - TRIGGER_TOKENS >= 1) for s in samples)


def test_continuations_share_few_engine_calls() -> None:
    engine = ScriptedEngine()
    first = [[_completion("x", t, "stop") for t in range(0, 4096, 7)]]
    force_budget(engine, [PROMPT], first, SamplingParams(max_tokens=4096), 8192)
    assert len(engine.calls) <= 16
