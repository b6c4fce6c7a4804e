"""`skillfactory compose` as a user runs it: a real process, files in and out, exit codes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from skillfactory.compose import VARIANTS
from skillfactory.parsing import (
    count_reflections,
    extract_answer,
    find_blocks,
    parse_verdict,
    think_and_after,
)
from skillfactory.prompts import SOLVE_VARIANTS
from skillfactory.tasks import get_task


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skillfactory.cli", "compose", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _sample(rng: random.Random, product: int, index: int, graded: bool) -> dict[str, Any]:
    correct = rng.random() < 0.4
    answer = product if correct else product + rng.randint(1, 99)
    reflections = []
    for _ in range(3):
        right = rng.random() < 0.7
        verdict = "Correct" if correct == right else "Incorrect"
        reflections.append({"text": f"I checked the digits. <verdict>{verdict}</verdict>"})
    sample: dict[str, Any] = {
        "text": f"Multiplying step by step ... <answer>{answer}</answer>",
        "prompt_variant": SOLVE_VARIANTS[index % 4],
        "reflections": reflections,
    }
    if graded:
        sample["correct"] = correct
    return sample


def write_samples(path: Path, n_problems: int = 6) -> list[dict[str, Any]]:
    rng = random.Random(0)
    records = []
    for number, problem in enumerate(get_task("multiplication-2").problems(n_problems, seed=1)):
        record = problem.to_record()
        product = problem.data["a"] * problem.data["b"]
        # Odd problems leave `correct` out, so the CLI grades them with the task's grader.
        record["samples"] = [_sample(rng, product, i, number % 2 == 0) for i in range(12)]
        records.append(record)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_compose_writes_chats_and_a_summary(tmp_path: Path) -> None:
    records = write_samples(tmp_path / "in.jsonl")
    out, summary_path = tmp_path / "sft.jsonl", tmp_path / "summary.json"
    result = _compose("--input", str(tmp_path / "in.jsonl"), "--output", str(out),
                      "--seed", "3", "--summary", str(summary_path))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "traces out" in result.stdout
    summary = json.loads(summary_path.read_text())
    lines = out.read_text().splitlines()
    assert summary["problems_in"] == len(records)
    assert summary["traces_out"] == len(lines) > 0
    by_class = summary["verdict_filter"].values()
    judged = sum(counts["kept"] + counts["dropped"] for counts in by_class)
    assert judged == len(records) * 12 * 3
    products = {r["id"]: str(r["a"] * r["b"]) for r in records}
    questions = {r["id"]: r["question"] for r in records}
    for line in lines:
        chat = json.loads(line)
        user, assistant = chat["messages"]
        assert user["content"] == questions[chat["meta"]["problem_id"]]
        assert extract_answer(assistant["content"]) == products[chat["meta"]["problem_id"]]
        assert count_reflections(assistant["content"]) == chat["meta"]["n_samples"]
        assert chat["meta"]["n_incorrect"] < chat["meta"]["n_correct"]


def test_same_seed_gives_byte_identical_output(tmp_path: Path) -> None:
    write_samples(tmp_path / "in.jsonl")
    outputs = []
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        out = tmp_path / f"{name}.jsonl"
        result = _compose("--input", str(tmp_path / "in.jsonl"), "--output", str(out),
                          "--seed", seed, "--variant", "skillfactory")  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


def test_bad_record_names_line_and_field_and_writes_nothing(tmp_path: Path) -> None:
    records = write_samples(tmp_path / "in.jsonl", n_problems=3)
    del records[1]["samples"][2]["text"]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "sft.jsonl"
    result = _compose("--input", str(tmp_path / "in.jsonl"), "--output", str(out), "--seed", "0")
    assert result.returncode == 2
    assert "line 2" in result.stderr and "samples[2].text" in result.stderr
    assert not out.exists()
    assert list(tmp_path.glob("*.partial")) == []


def test_unknown_variant_is_rejected_with_the_allowed_names(tmp_path: Path) -> None:
    write_samples(tmp_path / "in.jsonl", n_problems=1)
    result = _compose("--input", str(tmp_path / "in.jsonl"), "--output",
                      str(tmp_path / "o.jsonl"), "--seed", "0", "--variant", "bogus")  # fmt: skip
    assert result.returncode == 2
    assert "no-sample-order" in result.stderr


RELEASED = sorted(name for name in VARIANTS if name.startswith("released-"))
LAST_SAMPLE_CORRECT = {
    "released-0c": True,
    "released-c": True,
    "released-c-full": True,
    "released-c-ic": False,
    "released-cc": True,
    "released-no-reflection": True,
    "released-random": None,  # either
}
"""What each released format ends on."""
DEFAULT_SET = {"released-0c", "released-c", "released-c-ic", "released-cc"}


def _compose_released(tmp_path: Path, variant: str, *flags: str) -> list[dict[str, Any]]:
    out = tmp_path / f"{variant}.jsonl"
    result = _compose("--input", str(tmp_path / "in.jsonl"), "--output", str(out), "--seed", "2",
                      "--variant", variant, "--max-samples-per-trace", "3", *flags)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("variant", RELEASED)
def test_compose_builds_each_released_format(tmp_path: Path, variant: str) -> None:
    records = write_samples(tmp_path / "in.jsonl")
    products = {r["id"]: str(r["a"] * r["b"]) for r in records}
    chats = _compose_released(tmp_path, variant, "--repeats-per-question", "2")
    assert chats
    for chat in chats:
        meta, text = chat["meta"], chat["messages"][1]["content"]
        built_by = meta["variant"]
        assert built_by in (DEFAULT_SET if variant == "released-default" else {variant})
        think, _ = think_and_after(text)
        assert think is not None
        samples = find_blocks(think, "sample")
        assert len(samples) == meta["n_samples"] <= 3
        last_correct = extract_answer(samples[-1].text) == products[meta["problem_id"]]
        assert meta["ends_correct"] == last_correct
        if LAST_SAMPLE_CORRECT[built_by] is not None:
            assert last_correct is LAST_SAMPLE_CORRECT[built_by]
            assert extract_answer(text) == products[meta["problem_id"]]
        shown = 0 if built_by == "released-no-reflection" else meta["n_samples"]
        assert count_reflections(text) == shown


def _usable(record: dict[str, Any]) -> tuple[int, int]:
    """(correct, incorrect) samples of a problem with a reflection whose verdict is right."""
    product = str(record["a"] * record["b"])
    counts = [0, 0]
    for sample in record["samples"]:
        correct = extract_answer(sample["text"]) == product
        verdicts = [parse_verdict(r["text"]) for r in sample["reflections"]]
        if correct in verdicts:
            counts[correct] += 1
    return counts[1], counts[0]


def test_the_released_default_set_counts_per_format_and_problem(tmp_path: Path) -> None:
    records = write_samples(tmp_path / "in.jsonl", n_problems=8)
    chats = _compose_released(tmp_path, "released-default", "--repeats-per-question", "2")
    found = Counter((chat["meta"]["problem_id"], chat["meta"]["variant"]) for chat in chats)
    expected: Counter[tuple[str, str]] = Counter()
    for record in records:
        correct, incorrect = _usable(record)
        if correct == 0 or correct + incorrect < 3:
            continue
        formats = ["released-0c", "released-c"]
        formats += ["released-c-ic"] * (incorrect > 0) + ["released-cc"] * (correct >= 2)
        expected.update({(record["id"], name): 2 for name in formats})
    assert expected, "the input must let some problems take part"
    assert found == expected


def test_distinct_prompt_variants_is_a_flag(tmp_path: Path) -> None:
    write_samples(tmp_path / "in.jsonl")
    chats = _compose_released(tmp_path, "released-c", "--distinct-prompt-variants")
    assert chats
    for chat in chats:
        variants = chat["meta"]["prompt_variants"]
        assert len(variants) == 3 and len(set(variants)) == 3
