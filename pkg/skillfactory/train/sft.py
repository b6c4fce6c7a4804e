"""Stage 2: structural SFT on the silver chats with TRL's `SFTTrainer`.

Each chat record (`{"messages": [user…, assistant]}`, as stage 1 writes them, or a ShareGPT
`{"conversations": [{"from": "human", "value": …}, …]}` row with an optional `system` column, as
Hub teacher-trace datasets hold them) becomes a conversational prompt–completion pair: every message but the last is the prompt, the final
assistant message the completion. TRL then masks the prompt tokens out of the labels
(`completion_only_loss`), so the loss falls on the assistant's trace only.

Checkpoints go to `<out>/checkpoints/checkpoint-<step>` every `save_steps`; a re-run resumes from
the last one. The result is a standard Hugging Face model folder at `<out>/model`.

With `sft.lora` (rank > 0) TRL trains PEFT LoRA adapters (`peft_config`) and its checkpoints hold
the adapter; the adapter is written to `<out>/adapter` (PEFT format) and the merged weights
(W + alpha / rank · B A) to `<out>/model`, so GRPO and eval load a plain model folder either way.

The chats come from a local JSONL file or, when `sft.dataset` is `hf:<org>/<name>[:<split>]`,
from a Hugging Face Hub dataset read with `datasets` (imported only then). `sft.max_examples`
keeps a seeded draw of that many chats.
"""

from __future__ import annotations

import json
import os
import random
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from skillfactory.runspec import SFTSpec, hub_dataset
from skillfactory.train.precision import resolve_precision

MODEL_DIR = "model"
ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
RESULT_FILE = "sft.json"
MAX_DATASET_BYTES = 8 * 1024**3
"""Largest SFT dataset file read (8 GiB: the paper's 10k OpenThoughts rows are far below it)."""


class EmptySFTDataset(ValueError):
    """No usable chat in the SFT dataset (stage 1 composed no trace)."""


@dataclass
class SFTResult:
    """What an SFT run produced."""

    model_dir: str
    examples: int
    steps: int
    train_loss: float
    seconds: float
    resumed_from: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
"""ShareGPT speaker names (`from`) as chat roles; `user`/`assistant` are taken as they are."""


def chat_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    """The messages of a chat record: `messages` (role/content), or ShareGPT `conversations`
    (from/value) after the row's `system` text when it has one."""
    if "messages" in record:
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in record["messages"]]
    messages = []
    if isinstance(record.get("system"), str) and record["system"].strip():
        messages.append({"role": "system", "content": record["system"]})
    for turn in record.get("conversations") or []:
        speaker = str(turn["from"])
        messages.append(
            {"role": SHAREGPT_ROLES.get(speaker, speaker), "content": str(turn["value"])}
        )
    return messages


def prompt_completion(record: dict[str, Any]) -> dict[str, Any] | None:
    """A chat record as a conversational prompt/completion pair; None when it has no final
    assistant message or no prompt before it."""
    messages = chat_messages(record)
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        return None
    return {"prompt": messages[:-1], "completion": messages[-1:]}


class UnreadableDataset(ValueError):
    """A dataset path that is not a regular file, or larger than the cap."""


def read_chat_dataset(path: str | Path, max_bytes: int = MAX_DATASET_BYTES) -> list[dict[str, Any]]:
    """The prompt/completion pairs of a chat JSONL file, skipping records without an answer.
    Only a regular file of at most `max_bytes` is read (a device or a pipe could never end)."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableDataset(f"{path} is not a regular file")
    if info.st_size > max_bytes:
        raise UnreadableDataset(f"{path} holds {info.st_size} bytes, more than {max_bytes}")
    pairs = []
    with Path(path).open() as lines:
        for line in lines:
            if line.strip() and (pair := prompt_completion(json.loads(line))) is not None:
                pairs.append(pair)
    return pairs


def read_hub_chats(repo: str, split: str) -> list[dict[str, Any]]:
    """The prompt/completion pairs of a Hub dataset split (needs `datasets` and the network or its
    cache), skipping rows without an answer."""
    try:
        # deferred: heavy or optional (datasets)
        from datasets import load_dataset
    except ImportError:
        raise UnreadableDataset(
            "an hf: sft.dataset needs the datasets package: pip install datasets"
        ) from None
    rows = load_dataset(repo, split=split)
    return [pair for row in rows if (pair := prompt_completion(dict(row))) is not None]


def read_chats(dataset: str | Path) -> list[dict[str, Any]]:
    """The pairs of `sft.dataset`: a Hub dataset (`hf:<org>/<name>[:<split>]`) or a local file."""
    hub = hub_dataset(str(dataset))
    return read_hub_chats(*hub) if hub is not None else read_chat_dataset(dataset)


def draw_examples(pairs: list[dict[str, Any]], most: int | None, seed: int) -> list[dict[str, Any]]:
    """A seeded draw of `most` pairs (in the dataset's order), or all of them."""
    if most is None or len(pairs) <= most:
        return pairs
    return [pairs[i] for i in sorted(random.Random(seed).sample(range(len(pairs)), most))]


def last_checkpoint(out: Path) -> str | None:
    """The newest `checkpoint-<step>` folder under `<out>/checkpoints`, if any."""
    folders = [p for p in (out / CHECKPOINTS_DIR).glob("checkpoint-*") if p.is_dir()]
    numbered = [(int(p.name.rsplit("-", 1)[1]), p) for p in folders if p.name[11:].isdigit()]
    return str(max(numbered)[1]) if numbered else None


def sft_config(spec: SFTSpec, out: Path, seed: int, use_cpu: bool, precision: str) -> Any:
    """TRL's `SFTConfig` from the run spec's `sft` section (loss on completions only) for a
    resolved `precision` (bf16 autocast only under bf16-mixed; the model's own dtype holds the
    master weights)."""
    # deferred: heavy or optional (trl)
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out / CHECKPOINTS_DIR),
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler,
        warmup_steps=min(spec.warmup_ratio, 0.999),  # a float in [0, 1) is a ratio of all steps
        num_train_epochs=spec.num_epochs,
        max_length=spec.max_length,
        per_device_train_batch_size=spec.per_device_batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        save_steps=spec.save_steps,
        save_strategy="steps",
        save_total_limit=2,
        completion_only_loss=True,
        seed=seed,
        data_seed=seed,
        use_cpu=use_cpu,
        bf16=precision == "bf16-mixed",
        adam_beta2=spec.adam_beta2,
        weight_decay=spec.weight_decay,
        gradient_checkpointing=spec.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=1,
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def sft_trainer(
    spec: SFTSpec, model: str | Path, pairs: list[dict[str, Any]], out: Path, seed: int = 0
) -> Any:
    """A TRL `SFTTrainer` for `model` (a local HF folder) on prompt/completion pairs."""
    # deferred: heavy or optional (torch)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTTrainer

    from skillfactory.train.lora import lora_config  # deferred: loads torch

    use_cpu = not torch.cuda.is_available()
    precision = resolve_precision(spec.precision, spec.learning_rate, cuda=not use_cpu)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype),
        args=sft_config(spec, out, seed, use_cpu, precision),
        train_dataset=Dataset.from_list(pairs),
        processing_class=AutoTokenizer.from_pretrained(str(model)),
        peft_config=lora_config(spec.lora) if spec.lora.rank > 0 else None,
    )
    trainer.remove_callback(PrinterCallback)  # per-step dicts on stdout; the log history keeps them
    return trainer


def run_sft(
    spec: SFTSpec, model: str | Path, dataset: str | Path, out: str | Path, seed: int = 0
) -> SFTResult:
    """Fine-tune `model` (a local HF folder) on the chats in `dataset`; resumes when it can."""
    out = Path(out)
    pairs = draw_examples(read_chats(dataset), spec.max_examples, seed)
    if not pairs:
        raise EmptySFTDataset(f"{dataset} has no chat ending with an assistant message")
    trainer = sft_trainer(spec, model, pairs, out, seed)
    tokenizer = trainer.processing_class
    resume = last_checkpoint(out)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    model_dir = out / MODEL_DIR
    main_process = trainer.args.process_index == 0
    if spec.lora.rank > 0:
        trainer.save_model(str(out / ADAPTER_DIR))  # the adapter (PEFT format), main process
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if main_process:
            merged.save_pretrained(str(model_dir))
    else:
        trainer.save_model(str(model_dir))  # the main process writes (TRL/accelerate)
    if main_process:
        tokenizer.save_pretrained(str(model_dir))
    result = SFTResult(
        model_dir=str(model_dir),
        examples=len(pairs),
        steps=int(output.global_step),
        train_loss=float(output.training_loss),
        seconds=time.perf_counter() - started,
        resumed_from=resume,
    )
    if main_process:
        (out / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result
