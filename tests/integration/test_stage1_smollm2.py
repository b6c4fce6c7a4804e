"""Stage 1 on the real SmolLM2-135M-Instruct for 2 problems (a few minutes on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skillfactory.engines.setup import setup_engine
from skillfactory.parsing import extract_answer, last_block
from skillfactory.runspec import RunSpec
from skillfactory.stages.data import SAMPLES_FILE, SFT_FILE, SUMMARY_FILE, Stage1, data_dir

pytestmark = pytest.mark.slow


def test_stage1_on_smollm2_for_two_problems(tmp_path: Path) -> None:
    """Every sample is graded and reflected on, every verdict is completed, and the summary adds
    up; traces, when the model got something right, end on a correct sample."""
    spec = RunSpec.model_validate(
        {
            "name": "smol",
            "model": "smollm2-135m-instruct",
            "output_dir": str(tmp_path),
            "stages": ["data"],
            "data": {
                "task": "csqa",
                "num_problems": 2,
                "samples_per_variant": 2,
                "reflections_per_sample": 1,
                "complete_missing_tags": True,
                "sampling": {"max_tokens": 64},
                "reflection_sampling": {"max_tokens": 48},
            },
        }
    )
    engine = setup_engine(spec.engine, spec.model, spec.seed)
    summary = Stage1(spec, engine, max_batch_rows=16).run()
    out = data_dir(spec)
    records = [json.loads(line) for line in (out / SAMPLES_FILE).read_text().splitlines()]
    assert len(records) == 2
    samples = [s for r in records for s in r["samples"]]
    assert len(samples) == 2 * 4 * 2
    assert all(extract_answer(s["text"]) is not None for s in samples)
    reflections = [s["reflections"][0]["text"] for s in samples]
    assert all(last_block(text, "verdict") is not None for text in reflections)
    on_disk = json.loads((out / SUMMARY_FILE).read_text())
    assert on_disk == {**summary, "wall_seconds": on_disk["wall_seconds"]}
    assert on_disk["samples"] == 16 and on_disk["reflections"] == 16
    assert on_disk["sample_tokens"] > 0 and on_disk["reflection_tokens"] > 0
    correct = sum(s["correct"] for s in samples)
    assert on_disk["accuracy"] == pytest.approx(correct / 16)
    for line in (out / SFT_FILE).read_text().splitlines():
        trace = json.loads(line)["messages"][1]["content"]
        assert extract_answer(trace) is not None
