"""The memory plan of a spec: the paper's countdown spec fits 4 × 80 GB learner GPUs under the
update semantics of issue 13, and the old ones (one forward over a whole 512-sequence update with
full-vocabulary logits) do not."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from skillfactory.cli import app
from skillfactory.memory_plan import GIB, learner_estimate, micro_batch_tokens, rollout_estimate
from skillfactory.models.shapes import QWEN25_1_5B, shape_from_config, shape_of
from skillfactory.runspec import load_run_spec

PAPER = Path(__file__).resolve().parents[2] / "examples" / "paper-countdown.yaml"


def test_the_shape_gives_the_published_parameter_count() -> None:
    assert abs(QWEN25_1_5B.parameters - 1.54e9) < 0.01e9  # Qwen2.5-1.5B: 1.54 B parameters
    assert shape_of("Qwen/Qwen2.5-1.5B-Instruct") == QWEN25_1_5B
    config = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "vocab_size": 1000,
        "tie_word_embeddings": True,
    }
    assert shape_from_config(config).kv_heads == 4


def test_the_paper_spec_fits_four_80gb_gpus_and_the_old_semantics_do_not() -> None:
    spec = load_run_spec(PAPER)
    new = learner_estimate(QWEN25_1_5B, spec, gpus=4, gpu_memory_gib=80)
    assert new.fits, new.total_bytes / GIB
    tokens, rows = micro_batch_tokens(spec)
    assert tokens <= spec.grpo.max_tokens_per_micro_batch and rows >= 1
    width = spec.grpo.max_prompt_length + spec.grpo.max_response_length
    sequences = spec.grpo.mini_batch_size * spec.grpo.group_size  # 32 groups × 16 = 512
    old = learner_estimate(
        QWEN25_1_5B, spec, 4, 80, chunked=False, micro_batch=(sequences * width, sequences)
    )
    assert not old.fits
    logits = next(i for i in old.items if i.name.startswith("full logits"))
    assert logits.bytes > 100 * GIB  # the "well over 100 GB" of logits alone
    assert rollout_estimate(QWEN25_1_5B, spec, 80).fits


def test_validate_prints_the_plan_and_warns_when_it_does_not_fit(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["validate", str(PAPER), "--show", "--gpus", "4", "--gpu-memory", "80"]
    )
    assert result.exit_code == 0, result.output
    assert "memory plan (1.54 B parameters)" in result.output
    assert "learner GPU (1 of 4)" in result.output and "DOES NOT FIT" not in result.output
    small = runner.invoke(app, ["validate", str(PAPER), "--gpus", "1", "--gpu-memory", "8"])
    assert small.exit_code == 0
    assert "DOES NOT FIT" in small.output and "will not fit" in small.output
