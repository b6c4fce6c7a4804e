"""Stage 1 end to end on a tiny config-built model: dataset layout, composer invariants, resume.

A random 0.1M-parameter model never answers a question right, so `SkilledEngine` wraps the real
transformers engine and appends an answer (right for every other sample) to each solve completion
and a verdict (right three times out of four) to each reflection. Everything else — batching,
sampling, grading, the verdict filter, Algorithm 1, files and resume — runs for real.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from skillfactory.engines.base import Completion, Prompt, SamplingParams, Weights
from skillfactory.engines.transformers_engine import TransformersEngine
from skillfactory.parsing import extract_answer, find_blocks, parse_verdict
from skillfactory.runspec import RunSpec
from skillfactory.stages.data import SAMPLES_FILE, SFT_FILE, SUMMARY_FILE, Stage1, data_dir

QUESTION = re.compile(r"What is (\d+) \* (\d+)\?")


class SkilledEngine:
    """The real tiny engine, with answers and verdicts appended to what it generates."""

    def __init__(self, engine: TransformersEngine) -> None:
        self.engine = engine
        self.calls = 0

    @property
    def policy_version(self) -> int:
        return self.engine.policy_version

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        self.calls += 1
        results = self.engine.generate(prompts, params)
        for prompt, completions in zip(prompts, results, strict=True):
            content = str(prompt[-1]["content"]) if not isinstance(prompt, str) else prompt
            for i, completion in enumerate(completions):
                completion.text += self._suffix(
                    content, zlib.crc32(f"{i}{completion.text}".encode())
                )
        return results

    @staticmethod
    def _suffix(content: str, salt: int) -> str:
        if "<verdict>" in content:
            response = content.split("Response:", 1)[1]
            left, right = map(int, QUESTION.findall(content)[0])
            right_answer = extract_answer(response) == str(left * right)
            honest = salt % 4 != 0
            return (
                "<verdict>Correct</verdict>"
                if right_answer == honest
                else "<verdict>Incorrect</verdict>"
            )
        left, right = map(int, QUESTION.findall(content)[0])
        return f" <answer>{left * right + salt % 2}</answer>"

    def load_weights(self, weights: Weights, version: int) -> None:
        self.engine.load_weights(weights, version)

    def close(self) -> None:
        self.engine.close()


def _spec(tmp_path: Path, **data: Any) -> RunSpec:
    values = {
        "task": "multiplication-1",
        "num_problems": 3,
        "samples_per_variant": 2,
        "reflections_per_sample": 2,
        "sampling": {"max_tokens": 6},
        "reflection_sampling": {"max_tokens": 4},
        **data,
    }
    return RunSpec.model_validate(
        {"name": "t", "model": "tiny", "output_dir": str(tmp_path), "data": values}
    )


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> SkilledEngine:
    return SkilledEngine(TransformersEngine(tiny_model_dir, device="cpu", max_batch_size=16))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stage1_writes_dataset_whose_traces_hold_the_invariants(
    engine: SkilledEngine, tmp_path: Path
) -> None:
    spec = _spec(tmp_path)
    summary = Stage1(spec, engine, max_batch_rows=16).run()
    out = data_dir(spec)
    samples = _lines(out / SAMPLES_FILE)
    assert [r["id"] for r in samples] == [p.id for p in Stage1(spec, engine).problems()]
    assert all(len(r["samples"]) == 4 * 2 for r in samples)
    assert all(len(s["reflections"]) == 2 for r in samples for s in r["samples"])
    traces = _lines(out / SFT_FILE)
    assert traces, "half the samples are right: there must be traces"
    for trace in traces:
        user, assistant = trace["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        text = assistant["content"]
        sample_blocks, reflect_blocks = find_blocks(text, "sample"), find_blocks(text, "reflect")
        verdicts = [parse_verdict(b.text) for b in reflect_blocks]
        assert len(sample_blocks) == len(reflect_blocks) >= 1
        assert verdicts[-1] is True, "every trace ends on a correct pair"
        assert verdicts.count(False) < verdicts.count(True)
        assert extract_answer(text) == extract_answer(sample_blocks[-1].text)
        assert len({b.text for b in sample_blocks}) == len(sample_blocks)
    on_disk = json.loads((out / SUMMARY_FILE).read_text())
    assert on_disk["traces"] == len(traces) == summary["traces"]
    assert on_disk["problems"] == 3 and on_disk["samples"] == 24
    assert 0.3 < on_disk["accuracy"] < 0.7
    assert on_disk["verdict_accuracy"] == pytest.approx(0.75, abs=0.2)
    assert set(on_disk["accuracy_per_prompt_variant"]) == {
        "step_by_step", "plan_then_execute", "alternatives", "restate"
    }  # fmt: skip


def test_resume_after_a_crash_gives_the_same_dataset(engine: SkilledEngine, tmp_path: Path) -> None:
    whole = _spec(tmp_path / "whole")
    Stage1(whole, engine, max_batch_rows=8).run()
    expected = {name: (data_dir(whole) / name).read_bytes() for name in (SAMPLES_FILE, SFT_FILE)}

    crashed = _spec(tmp_path / "crashed")
    stage = Stage1(crashed, engine, max_batch_rows=8)
    original = stage.sample_chunk
    calls = 0

    def crash_on_second_chunk(index: int, problems: list[Any]) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 2:
            torn = data_dir(crashed) / SAMPLES_FILE
            torn.write_text(torn.read_text() + '{"id": "torn half of a rec')
            raise KeyboardInterrupt
        return original(index, problems)

    stage.sample_chunk = crash_on_second_chunk  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        stage.run()
    assert len(_lines_safe(data_dir(crashed) / SAMPLES_FILE)) == 1

    resumed = Stage1(crashed, engine, max_batch_rows=8)
    done_before = engine.calls
    resumed.run()
    for name, content in expected.items():
        assert (data_dir(crashed) / name).read_bytes() == content, name
    solve_and_reflect_calls = 2
    assert engine.calls - done_before == solve_and_reflect_calls * 2, "only chunks 2 and 3 redone"


def _lines_safe(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def test_missing_tags_are_completed_by_the_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    plain = TransformersEngine(tiny_model_dir, device="cpu", max_batch_size=16)
    spec = _spec(tmp_path, num_problems=1, complete_missing_tags=True, reflections_per_sample=1)
    Stage1(spec, plain, max_batch_rows=16).run()
    (record,) = _lines(data_dir(spec) / SAMPLES_FILE)
    for sample in record["samples"]:
        assert "So the final answer is <answer>" in sample["text"]
        assert sample["text"].endswith("</answer>")
        (reflection,) = sample["reflections"]
        assert reflection["text"].rstrip().endswith("</verdict>")
