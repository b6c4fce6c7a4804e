"""Stage 2 with TRL's SFTTrainer on the tiny model: prompt tokens masked, checkpoints, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skillfactory.runspec import SFTSpec
from skillfactory.train.sft import (
    EmptySFTDataset,
    last_checkpoint,
    prompt_completion,
    read_chat_dataset,
    run_sft,
    sft_trainer,
)

pytest.importorskip("trl")


def write_chats(path: Path, n: int = 6) -> Path:
    records = [
        {
            "id": f"r{i}",
            "messages": [
                {"role": "user", "content": f"What is {i} plus one?"},
                {"role": "assistant", "content": f"<think>{i}+1</think><answer>{i + 1}</answer>"},
            ],
            "meta": {"n_samples": 1},
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_records_become_conversational_prompt_completion_pairs() -> None:
    pair = prompt_completion(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    )
    assert pair == {
        "prompt": [{"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "a"}],
    }
    assert prompt_completion({"messages": [{"role": "user", "content": "q"}]}) is None


def test_only_assistant_tokens_carry_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs = read_chat_dataset(write_chats(tmp_path / "sft.jsonl", 2))
    trainer = sft_trainer(SFTSpec(max_length=128), tiny_model_dir, pairs, tmp_path / "out")
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = batch["labels"][0].tolist()
    ids = batch["input_ids"][0].tolist()
    trained = [t for t, label in zip(ids, labels, strict=True) if label != -100]
    tokenizer = trainer.processing_class
    assert tokenizer.decode(trained).startswith("<think>0+1</think><answer>1</answer>")
    prompt = tokenizer.apply_chat_template(
        pairs[0]["prompt"], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert labels[: len(prompt_ids)] == [-100] * len(prompt_ids)
    assert ids[: len(prompt_ids)] == list(prompt_ids)
    assert all(label != -100 for label in labels[len(prompt_ids) :])


def test_sft_trains_checkpoints_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_chats(tmp_path / "sft.jsonl")
    spec = SFTSpec(num_epochs=2, learning_rate=1e-3, save_steps=4, max_length=64)
    result = run_sft(spec, tiny_model_dir, data, tmp_path / "out")
    assert result.steps == 12 and result.examples == 6 and result.resumed_from is None
    assert (Path(result.model_dir) / "config.json").exists()
    assert (Path(result.model_dir) / "tokenizer_config.json").exists()
    assert last_checkpoint(tmp_path / "out") == str(tmp_path / "out/checkpoints/checkpoint-12")

    longer = spec.model_copy(update={"num_epochs": 3.0})
    again = run_sft(longer, tiny_model_dir, data, tmp_path / "out")
    assert again.resumed_from == str(tmp_path / "out/checkpoints/checkpoint-12")
    assert again.steps == 18


def test_the_loss_falls_on_a_repeated_dataset(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = write_chats(tmp_path / "sft.jsonl", 2)
    spec = SFTSpec(num_epochs=15, learning_rate=5e-3, save_steps=1000, max_length=64)
    result = run_sft(spec, tiny_model_dir, data, tmp_path / "out")

    def completion_loss(model_dir: Path | str) -> float:
        import torch

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir))
        pair = read_chat_dataset(data)[0]
        prompt = tokenizer.apply_chat_template(
            pair["prompt"], add_generation_prompt=True, tokenize=False
        )
        text = prompt + pair["completion"][0]["content"]
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        labels = ids.clone()
        labels[:, : len(tokenizer(prompt, add_special_tokens=False)["input_ids"])] = -100
        with torch.no_grad():
            return float(model(input_ids=ids, labels=labels).loss)

    assert completion_loss(result.model_dir) < 0.5 * completion_loss(tiny_model_dir)


def test_an_empty_dataset_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "sft.jsonl").write_text("")
    with pytest.raises(EmptySFTDataset, match="no chat"):
        run_sft(SFTSpec(), tiny_model_dir, tmp_path / "sft.jsonl", tmp_path / "out")
