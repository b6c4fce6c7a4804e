"""`sft.dataset` naming a Hub dataset (`hf:<org>/<name>[:<split>]`), ShareGPT rows, max_examples."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from skillfactory.runspec import InvalidRunSpec, hub_dataset, parse_run_spec
from skillfactory.serving.run_policy import RunPolicy, admit
from skillfactory.train.sft import draw_examples, prompt_completion, read_chats

SHAREGPT_ROW = {
    "system": "Think step by step.",
    "conversations": [
        {"from": "human", "value": "What is 2 + 3?"},
        {"from": "gpt", "value": "<think>2 + 3 = 5</think>\n\nThe answer is \\boxed{5}."},
    ],
}


@pytest.mark.parametrize(
    ("dataset", "parsed"),
    [
        ("hf:open-thoughts/OpenThoughts-114k", ("open-thoughts/OpenThoughts-114k", "train")),
        ("hf:org/name:test", ("org/name", "test")),
        ("hf:org/name:train[:1000]", ("org/name", "train[:1000]")),
        ("data/chats.jsonl", None),
    ],
)
def test_hub_dataset_ids_are_parsed(dataset: str, parsed: tuple[str, str] | None) -> None:
    assert hub_dataset(dataset) == parsed
    assert parse_run_spec({"sft": {"dataset": dataset}}).sft.dataset == dataset


@pytest.mark.parametrize("bad", ["hf:", "hf:name-only", "hf:org/name:", "hf:a/b/c", "hf:org/na me"])
def test_a_malformed_hub_id_is_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidRunSpec) as caught:
        parse_run_spec({"sft": {"dataset": bad}})
    problem = caught.value.problems[0]
    assert problem.path == "sft.dataset"
    assert "hf:<org>/<name>[:<split>]" in problem.message


def test_sharegpt_rows_become_prompt_completion_pairs() -> None:
    pair = prompt_completion(SHAREGPT_ROW)
    assert pair is not None
    assert [m["role"] for m in pair["prompt"]] == ["system", "user"]
    assert pair["completion"][0]["role"] == "assistant"
    assert pair["completion"][0]["content"].endswith("\\boxed{5}.")


def test_a_hub_dataset_is_read_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def load_dataset(repo: str, split: str) -> list[dict[str, Any]]:
        calls.append((repo, split))
        return [SHAREGPT_ROW, {"conversations": [{"from": "human", "value": "no answer"}]}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    pairs = read_chats("hf:org/traces:train[:10]")
    assert calls == [("org/traces", "train[:10]")]
    assert len(pairs) == 1  # the row without an assistant turn is skipped


def test_a_local_file_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(SHAREGPT_ROW) + "\n")
    assert len(read_chats(path)) == 1


def test_max_examples_is_a_seeded_draw() -> None:
    pairs = [{"i": i} for i in range(100)]
    drawn = draw_examples(pairs, 10, seed=3)
    assert len(drawn) == 10 and drawn == draw_examples(pairs, 10, seed=3)
    assert drawn != draw_examples(pairs, 10, seed=4)
    assert [p["i"] for p in drawn] == sorted(p["i"] for p in drawn)
    assert draw_examples(pairs, None, 0) == pairs and draw_examples(pairs, 500, 0) == pairs


def test_the_learner_service_keeps_a_hub_dataset_id(tmp_path: Path) -> None:
    spec = parse_run_spec({"sft": {"dataset": "hf:org/traces:train"}})
    admitted = admit(spec, RunPolicy(data_root=tmp_path), "run-1")
    assert admitted.sft.dataset == "hf:org/traces:train"
    local = admit(parse_run_spec({"sft": {"dataset": "chats.jsonl"}}), RunPolicy(tmp_path), "r")
    assert local.sft.dataset == str(tmp_path.resolve() / "chats.jsonl")
