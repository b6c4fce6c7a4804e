"""Budget forcing: where the trigger goes, the B2 limit, and which responses are forced.

`ScriptedEngine` is a fake that implements the `Engine` protocol and returns scripted texts (and,
optionally, prompt token ids: one per character): fine here, since what is tested is the forcing
logic around the engine. One test runs the tiny config-built model and checks the token count
against its tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from skillfactory.engines.base import Completion, Engine, FinishReason, Prompt, SamplingParams
from skillfactory.eval.budget_forcing import (
    TRIGGER,
    TRIGGER_TOKENS,
    continuation_budget,
    continuation_prompt,
    force_budget,
    forced_text,
)
from skillfactory.prompts import solve_prompt

PROMPT = [{"role": "user", "content": "What is 6 * 7?"}]


def _prompt_ids(prompt: Prompt) -> list[int]:
    """The fake tokenization: one token per character of every message, and 3 per message."""
    messages = [{"content": prompt}] if isinstance(prompt, str) else prompt
    return [0] * sum(len(str(m["content"])) + 3 for m in messages)


def _completion(
    text: str, tokens: int, finish: FinishReason, prompt: Prompt | None = None
) -> Completion:
    prompt_ids = _prompt_ids(prompt) if prompt is not None else []
    return Completion(text, list(range(tokens)), [0.0] * tokens, finish, 0, prompt_ids)


class ScriptedEngine:
    """Continues every prompt with `text`, generating `max_tokens` tokens (finish "length");
    reports prompt token ids when `prompt_ids` is set."""

    def __init__(
        self, text: str = "<answer>42</answer>\n</sample>", prompt_ids: bool = False
    ) -> None:
        self.text = text
        self.prompt_ids = prompt_ids
        self.calls: list[tuple[list[Prompt], SamplingParams]] = []

    @property
    def policy_version(self) -> int:
        return 0

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((list(prompts), params))
        return [
            [_completion(self.text, params.max_tokens, "length", p if self.prompt_ids else None)]
            for p in prompts
        ]

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
    response = "<think>\nguess <answer>41</answer>\n</think>\n<answer>41</answer>"
    first = [[_completion(response, 20, "stop")]]
    params = SamplingParams(temperature=0.7, top_p=0.8, max_tokens=50, seed=3)
    [[sample]] = force_budget(engine, [PROMPT], first, params, total_budget=100)

    [(probed, probe), (prompts, used)] = engine.calls
    kept = "<think>\nguess <answer>41</answer>\n" + TRIGGER
    assert prompts == probed == [[*PROMPT, {"role": "assistant", "content": kept}]]
    assert (probe.max_tokens, probe.temperature) == (1, 0.0)
    assert (used.n, used.temperature, used.top_p) == (1, 0.7, 0.8)
    assert sample.forced
    assert sample.text == kept + "<answer>42</answer>\n</sample>"
    assert sample.first_tokens == 20
    # no prompt token ids: charged every first token and the trigger's bytes
    assert sample.tokens == 20 + TRIGGER_TOKENS + used.max_tokens <= 100


def test_kept_tokens_are_measured_from_the_prompt_token_ids() -> None:
    # 5 generated tokens whose text re-tokenizes into 40 (one per character): the measured count
    # decides the room, not the generated one.
    engine = ScriptedEngine(prompt_ids=True)
    text = "x" * 39
    first = [[_completion(text, 5, "stop", PROMPT)]]
    [[sample]] = force_budget(engine, [PROMPT], first, SamplingParams(), total_budget=100)
    kept = len(text + "\n" + TRIGGER) + 3  # the assistant message and its overhead
    [_, (_, used)] = engine.calls
    assert used.max_tokens == 100 - kept - (100 - kept) % (100 // 16)
    assert sample.tokens == kept + used.max_tokens <= 100
    [[unforced]] = force_budget(engine, [PROMPT], first, SamplingParams(), total_budget=kept)
    assert not unforced.forced and unforced.tokens == 5


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
    for used in range(0, total_budget + 1, max(1, total_budget // 50)):
        budget = continuation_budget(used, total_budget)
        assert budget <= 0 or used + budget <= total_budget
    step = max(1, total_budget // 7)
    for prompt_ids in (False, True):
        engine = ScriptedEngine(prompt_ids=prompt_ids)
        first = [
            [
                _completion("x" * (t % 50), t, "stop", PROMPT if prompt_ids else None)
                for t in range(0, total_budget + 1, step)
            ]
        ]
        params = SamplingParams(max_tokens=total_budget)
        [samples] = force_budget(engine, [PROMPT], first, params, total_budget)
        assert all(s.tokens <= total_budget for s in samples)
        if not prompt_ids:
            room = [total_budget - s.first_tokens - TRIGGER_TOKENS for s in samples]
            assert [s.forced for s in samples] == [r >= 1 for r in room]


def test_continuations_share_few_engine_calls() -> None:
    engine = ScriptedEngine()
    first = [[_completion("x", t, "stop") for t in range(0, 4096, 7)]]
    force_budget(engine, [PROMPT], first, SamplingParams(max_tokens=4096), 8192)
    assert len(engine.calls) <= 1 + 16  # the probe, then one call per bucket


def test_forced_tokens_match_the_tokenizer_of_a_real_model(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from skillfactory.engines.base import render_chat
    from skillfactory.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(str(tiny_model_dir), device="cpu", seed=0, max_batch_size=8)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [solve_prompt(f"What is {n} * 7?") for n in range(3)]
    first = engine.generate(prompts, SamplingParams(n=2, max_tokens=12, seed=1))
    for row in first:
        for completion in row:
            completion.finish_reason = "stop"  # a random model rarely stops by itself
    forced = force_budget(engine, prompts, first, SamplingParams(seed=2), total_budget=48)
    engine.close()
    for prompt, samples in zip(prompts, forced, strict=True):
        original = len(
            tokenizer(render_chat(tokenizer, prompt), add_special_tokens=False).input_ids
        )
        for sample in samples:
            chat = continuation_prompt(prompt, sample.first_text)
            rendered = render_chat(tokenizer, chat)
            kept = len(tokenizer(rendered, add_special_tokens=False).input_ids) - original
            assert sample.forced
            assert kept <= sample.tokens <= 48
