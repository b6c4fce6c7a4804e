"""The evaluation harness: held-out problems, files, exact aggregates, groups, budget forcing.

Most tests use `ScriptedEngine`, a fake that implements the `Engine` protocol and returns scripted
texts (fine for unit tests: the numbers it leads to can be computed by hand). One test runs the
tiny config-built model for real, to check that a fixed seed gives the same records.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from skillfactory.engines.base import Completion, Engine, FinishReason, Prompt, SamplingParams
from skillfactory.eval.budget_forcing import TRIGGER_TOKENS
from skillfactory.eval.harness import (
    AGGREGATE_FILE,
    SUMMARY_FILE,
    evaluate,
    task_groups,
)
from skillfactory.eval.held_out import held_out_problems
from skillfactory.runspec import RunSpec
from skillfactory.tasks import get_task

PRODUCT = re.compile(r"What is (\d+) \* (\d+)\?")


def _product(prompt: Prompt) -> int | None:
    match = PRODUCT.search(str(prompt[0]["content"])) if not isinstance(prompt, str) else None
    return int(match[1]) * int(match[2]) if match else None


def scripted_response(product: int | None, sample: int) -> tuple[str, int]:
    """Sample 0: a wrong sample judged incorrect, a right one judged correct, the right answer
    (3 answers, 2 reflections, 30 tokens). Sample 1: a wrong sample judged correct, the wrong
    answer (2 answers, 1 reflection, 10 tokens). Without a product (csqa): a wrong letter."""
    if product is None:
        return "<answer>Z</answer>", 4
    if sample == 0:
        return (
            f"<think>\n<sample>\n<answer>{product + 1}</answer>\n</sample>\n"
            "<reflect>\nThe product is off.\n<verdict>Incorrect</verdict>\n</reflect>\n"
            f"<sample>\n<answer>{product}</answer>\n</sample>\n"
            "<reflect>\n<verdict>Correct</verdict>\n</reflect>\n</think>\n"
            f"<answer>{product}</answer>",
            30,
        )
    return (
        f"<sample><answer>{product + 1}</answer></sample>"
        f"<reflect><verdict>Correct</verdict></reflect> <answer>{product + 1}</answer>",
        10,
    )


class ScriptedEngine:
    """Answers with `scripted_response`; a continuation (last message the assistant's) gets the
    right answer. Every first response finishes with `finish`."""

    def __init__(self, model: str = "m", finish: FinishReason = "length") -> None:
        self.model = model
        self.finish = finish
        self.calls: list[tuple[list[Prompt], SamplingParams]] = []
        self.closed = False

    @property
    def policy_version(self) -> int:
        return 0

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((list(prompts), params))
        return [[self._one(p, j) for j in range(params.n)] for p in prompts]

    def _one(self, prompt: Prompt, sample: int) -> Completion:
        if not isinstance(prompt, str) and prompt[-1]["role"] == "assistant":
            text, tokens, finish = f"<answer>{_product(prompt)}</answer>\n</sample>", 5, "stop"
        else:
            (text, tokens), finish = scripted_response(_product(prompt), sample), self.finish
        return Completion(text, list(range(tokens)), [0.0] * tokens, finish, 0)  # type: ignore[arg-type]

    def load_weights(self, weights: object, version: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


def _spec(**eval_values: Any) -> RunSpec:
    values = {"tasks": ["multiplication-2", "multiplication-3", "csqa"], "num_problems": 2,
              "samples_per_problem": 2, "max_tokens": 64, **eval_values}  # fmt: skip
    return RunSpec.model_validate({"data": {"task": "multiplication-2"}, "eval": values})


def _evaluate(
    spec: RunSpec, out: Path, models: dict[str, str] | None = None
) -> tuple[dict[str, Any], list[ScriptedEngine]]:
    engines: list[ScriptedEngine] = []

    def factory(model: str) -> Engine:
        engines.append(ScriptedEngine(model))
        return engines[-1]

    return evaluate(spec, models or {"base": "some/model"}, out, engine_factory=factory), engines


def test_scripted_engine_is_an_engine() -> None:
    assert isinstance(ScriptedEngine(), Engine)


def test_aggregates_equal_hand_computed_values(tmp_path: Path) -> None:
    summary, [engine] = _evaluate(_spec(), tmp_path)
    metrics = summary["base"]["tasks"]["multiplication-2"]
    # 2 problems × (one right sample, one wrong): verdicts per problem: (Incorrect, wrong),
    # (Correct, right), (Correct, wrong) → correct class tp 2 fp 2 fn 0, incorrect tp 2 fp 0 fn 2.
    assert metrics["n_problems"] == 2 and metrics["n_samples"] == 4
    assert metrics["accuracy"] == 0.5
    assert metrics["n_answers"] == 2.5 and metrics["n_reflections"] == 1.5
    assert metrics["n_verdicts"] == 6
    assert metrics["verdict"]["correct"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "tp": 2, "fp": 2, "fn": 0}  # fmt: skip
    assert metrics["verdict"]["incorrect"]["f1"] == pytest.approx(2 / 3)
    assert metrics["verdict_f1_correct"] == pytest.approx(2 / 3)
    assert metrics["mean_tokens"] == 20.0 and metrics["truncated_share"] == 1.0
    assert summary["base"]["tasks"]["csqa"]["accuracy"] == 0.0
    assert engine.closed and engine.model == "some/model"
    [(prompts, params)] = engine.calls[:1]
    assert (params.n, params.max_tokens, params.temperature, params.top_p) == (2, 64, 0.7, 0.8)
    assert not isinstance(prompts[0], str)
    [message] = prompts[0]
    # the question alone, as SFT traces and GRPO rollouts see it (no solve-style instruction)
    assert str(message["content"]).startswith("What is") and "one step at a time" not in str(
        message["content"]
    )


def test_groups_average_their_tasks(tmp_path: Path) -> None:
    summary, _ = _evaluate(_spec(), tmp_path)
    groups = summary["base"]["groups"]
    assert {name: g["tasks"] for name, g in groups.items()} == {
        "in_domain": ["multiplication-2"],
        "harder": ["multiplication-3"],
        "out_of_domain": ["csqa"],
        "overall": ["multiplication-2", "multiplication-3", "csqa"],
    }
    assert groups["overall"]["accuracy"] == pytest.approx(1 / 3)
    assert groups["harder"]["n_reflections"] == 1.5
    assert groups["overall"]["mean_tokens"] == pytest.approx((20 + 20 + 4) / 3)


def test_group_membership_by_family_and_size() -> None:
    spec = RunSpec.model_validate({"data": {"task": "countdown-4"}})
    groups = task_groups(spec, ["countdown-3", "countdown-4", "countdown-6", "acronym-5", "gsm8k"])
    assert groups["in_domain"] == ["countdown-4"]
    assert groups["harder"] == ["countdown-6"]
    assert groups["out_of_domain"] == ["countdown-3", "acronym-5", "gsm8k"]
    assert "in_domain" not in task_groups(spec, ["gsm8k"])


def test_files_hold_per_sample_records(tmp_path: Path) -> None:
    summary, _ = _evaluate(_spec(), tmp_path)
    lines = (tmp_path / "base" / "multiplication-2.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4
    first = records[0]
    assert first["problem_id"].startswith("multiplication-2-test-")
    assert (
        first["sample"] == 0 and first["correct"] and first["answer"] == first["reference_answer"]
    )
    assert (first["n_answers"], first["n_reflections"], first["tokens"]) == (3, 2, 30)
    assert first["verdicts"] == [
        {"predicted": "incorrect", "sample_correct": False},
        {"predicted": "correct", "sample_correct": True},
    ]
    assert records[1]["verdicts"] == [{"predicted": "correct", "sample_correct": False}]
    assert json.loads((tmp_path / SUMMARY_FILE).read_text()) == summary
    aggregate = json.loads((tmp_path / "base" / AGGREGATE_FILE).read_text())
    assert aggregate == summary["base"] and aggregate["model"] == "some/model"


def test_every_model_gets_its_own_engine_and_later_labels_are_merged(tmp_path: Path) -> None:
    spec = _spec(tasks=["multiplication-2"])
    _, engines = _evaluate(spec, tmp_path, {"base": "a", "sft": "b"})
    assert [(e.model, e.closed) for e in engines] == [("a", True), ("b", True)]
    summary, _ = _evaluate(spec, tmp_path, {"grpo": "c"})
    assert list(summary) == ["base", "sft", "grpo"]
    # every model is asked the same problems under the same seed
    assert engines[0].calls[0] == engines[1].calls[0]


def test_the_engine_is_closed_when_a_task_fails(tmp_path: Path) -> None:
    engine = ScriptedEngine()

    def fail(prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        raise RuntimeError("out of memory")

    engine.generate = fail  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        evaluate(_spec(), {"base": "m"}, tmp_path, engine_factory=lambda _: engine)
    assert engine.closed


def test_bad_labels_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="label"):
        _evaluate(_spec(), tmp_path, {"../up": "m"})


def test_hostile_text_is_graded_without_crashing(tmp_path: Path) -> None:
    hostile = [
        "<answer>" * 20_000,
        "<answer>1e99999999 ** 9 ** 9</answer>",
        "</answer><answer></answer><verdict>" + "\x00\ud7ff\u202e" * 1000,
        "<sample>" * 500 + "<reflect><verdict>Correct" * 500,
        "<answer>" + "(" * 10_000 + "1" + ")" * 10_000 + "</answer>",
    ]

    class Hostile(ScriptedEngine):
        def _one(self, prompt: Prompt, sample: int) -> Completion:
            return Completion(hostile[sample % len(hostile)], [1], [0.0], "stop", 0)

    spec = _spec(tasks=["countdown-3", "multiplication-2", "csqa", "gsm8k", "math500", "acronym-4", "letter-countdown-4"],
                 num_problems=1, samples_per_problem=len(hostile))  # fmt: skip
    summary = evaluate(spec, {"base": "m"}, tmp_path, engine_factory=lambda _: Hostile())
    assert all(m["accuracy"] == 0.0 for m in summary["base"]["tasks"].values())


def test_budget_forcing_reports_accuracy_with_and_without(tmp_path: Path) -> None:
    forcing = {"enabled": True, "first_budget": 64, "total_budget": 128}
    spec = _spec(tasks=["multiplication-2"], budget_forcing=forcing)
    engine = ScriptedEngine(finish="stop")
    summary = evaluate(spec, {"base": "m"}, tmp_path, engine_factory=lambda _: engine)
    result = summary["base"]["tasks"]["multiplication-2"]["budget_forcing"]
    # B1 equals max_tokens: the plain responses are the first ones, so one call for them, a probe
    # (the fake reports no prompt token ids, so every first token and the trigger's bytes are
    # charged), then one call per continuation budget (30- and 10-token responses:
    # 128 - 30 - 10 = 88 and 108 rounded down to 104); every continuation answers right.
    budgets = [params.max_tokens for _, params in engine.calls]
    assert budgets == [64, 1, 128 - 30 - TRIGGER_TOKENS, 104]
    assert (result["accuracy_without"], result["accuracy_with"], result["difference"]) == (
        0.5,
        1.0,
        0.5,
    )
    assert result["forced_share"] == 1.0
    assert result["mean_tokens_with"] == 20 + TRIGGER_TOKENS + 5
    records = [
        json.loads(line)
        for line in (tmp_path / "base" / "multiplication-2.budget_forcing.jsonl").open()
    ]
    assert [r["first_correct"] for r in records] == [True, False, True, False]
    assert all(r["forced"] and r["correct"] and r["tokens"] <= 128 for r in records)
    assert summary["base"]["groups"]["overall"]["budget_forcing"]["difference"] == 0.5


def test_budget_forcing_with_its_own_first_budget(tmp_path: Path) -> None:
    forcing = {"enabled": True, "first_budget": 32, "total_budget": 40}
    spec = _spec(tasks=["multiplication-2"], budget_forcing=forcing)
    engine = ScriptedEngine(finish="stop")
    summary = evaluate(spec, {"base": "m"}, tmp_path, engine_factory=lambda _: engine)
    assert [params.max_tokens for _, params in engine.calls][:3] == [64, 32, 1]
    # 30-token first responses leave no room under B2 = 40; only the 10-token ones are forced.
    assert summary["base"]["tasks"]["multiplication-2"]["budget_forcing"]["forced_share"] == 0.5


def test_held_out_problems_avoid_stage_one_problems() -> None:
    spec = RunSpec.model_validate({"data": {"task": "multiplication-1", "num_problems": 60}})
    train = {p.question for p in get_task("multiplication-1").problems(60, seed=0)}
    test = held_out_problems(spec, "multiplication-1", 10)
    assert len(test) == 10 and len({p.question for p in test}) == 10
    assert not train & {p.question for p in test}
    assert all("-test-" in p.id for p in test)
    assert held_out_problems(spec, "gsm8k", 3)[0].id.startswith("gsm8k-test-")
    assert len(held_out_problems(spec, "csqa", 3)) == 3


def test_a_fixed_seed_gives_the_same_records(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = RunSpec.model_validate(
        {"model": str(tiny_model_dir), "engine": {"type": "transformers", "device": "cpu", "max_batch_size": 8},
         "eval": {"tasks": ["multiplication-2"], "num_problems": 2, "samples_per_problem": 2, "max_tokens": 6}}
    )  # fmt: skip
    texts = []
    for run in ("one", "two"):
        evaluate(spec, {"base": str(tiny_model_dir)}, tmp_path / run)
        texts.append((tmp_path / run / "base" / "multiplication-2.jsonl").read_text())
    assert texts[0] == texts[1]
    assert all(json.loads(line)["tokens"] <= 6 for line in texts[0].splitlines())
