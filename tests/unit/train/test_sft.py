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


def _weights(folder: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return {
        k: v.float() for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()
    }


def _changed_share(precision: str, tiny_model_dir: Path, tmp_path: Path) -> float:
    """Share of the parameters with a non-zero gradient that one SFT step at lr 1e-6 changes,
    compared in fp32 (the start held in the precision's own weight dtype)."""
    import torch

    chats = write_chats(tmp_path / f"{precision}.jsonl", 1)
    spec = SFTSpec(
        learning_rate=1e-6,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        num_epochs=1,
        max_length=128,
        precision=precision,  # type: ignore[arg-type]
    )
    probe = sft_trainer(
        SFTSpec(max_length=128, precision="fp32"),
        tiny_model_dir,
        read_chat_dataset(chats),
        tmp_path / "probe",
    )
    batch = probe.data_collator([probe.train_dataset[0]])
    probe.compute_loss(probe.model, batch).backward()
    touched = {n: p.grad != 0 for n, p in probe.model.named_parameters() if p.grad is not None}
    with pytest.warns(UserWarning, match="pure bf16") if precision == "bf16" else _no_warning():
        result = run_sft(spec, tiny_model_dir, chats, tmp_path / precision)
    assert result.steps == 1
    start_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    before = {k: v.to(start_dtype).float() for k, v in _weights(tiny_model_dir).items()}
    after = _weights(Path(result.model_dir))
    changed = total = 0
    for name, mask in touched.items():
        key = name if name in after else name.removeprefix("model.")
        if key not in after:
            continue
        diff = (after[key] != before[key]) & mask  # type: ignore[operator]
        changed += int(diff.sum())
        total += int(mask.sum())
    assert total > 0
    return changed / total


class _no_warning:  # noqa: N801 (a context manager in a conditional expression)
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def test_bf16_mixed_keeps_tiny_updates_that_pure_bf16_rounds_away(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """At the paper's lr 1e-6 an Adam step is ~1e-6 per weight: fp32 master weights keep it,
    bf16 weights near 0.02 (spacing ~1e-4) round it away."""
    mixed = _changed_share("bf16-mixed", tiny_model_dir, tmp_path)
    pure = _changed_share("bf16", tiny_model_dir, tmp_path)
    assert mixed >= 0.9, mixed
    assert pure < 0.5 * mixed, (pure, mixed)


def test_lora_sft_writes_a_peft_adapter_and_the_merged_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """With sft.lora the adapter loads with PEFT, `model/` is a plain folder with the merged
    weights (same logits as base + adapter), and a re-run resumes from TRL's adapter checkpoint."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = write_chats(tmp_path / "sft.jsonl", 4)
    lora = {"rank": 4, "alpha": 8.0, "target_modules": ["q_proj", "v_proj", "down_proj"]}
    spec = SFTSpec(num_epochs=1, learning_rate=1e-2, save_steps=2, max_length=64, lora=lora)  # type: ignore[arg-type]
    result = run_sft(spec, tiny_model_dir, data, tmp_path / "out")
    assert result.steps == 4
    adapter = tmp_path / "out" / "adapter"
    assert (adapter / "adapter_config.json").exists()

    def load(path: Path) -> torch.nn.Module:
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()

    ids = torch.tensor([[5, 6, 7, 30, 31, 32]])
    with torch.no_grad():
        merged = load(Path(result.model_dir))(ids).logits
        adapted = PeftModel.from_pretrained(load(tiny_model_dir), str(adapter))(ids).logits
        base = load(tiny_model_dir)(ids).logits
    torch.testing.assert_close(merged, adapted, rtol=0, atol=1e-5)
    assert (merged - base).abs().max() > 1e-4

    again = run_sft(
        spec.model_copy(update={"num_epochs": 2.0}), tiny_model_dir, data, tmp_path / "out"
    )
    assert again.resumed_from == str(tmp_path / "out/checkpoints/checkpoint-4")
    assert again.steps == 8
