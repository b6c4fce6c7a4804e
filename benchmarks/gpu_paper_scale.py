"""The learner and SFT at the paper's scale on one GPU, with a config-built model of
Qwen2.5-1.5B's shape (random weights, vocabulary 151,936; no weights travel).

    PYTHONPATH=pkg python3 benchmarks/gpu_paper_scale.py grpo --json OUT.json
    PYTHONPATH=pkg python3 benchmarks/gpu_paper_scale.py sft --json OUT.json
    PYTHONPATH=pkg python3 benchmarks/gpu_paper_scale.py grpo --tiny    # CPU smoke test

`grpo`: one rollout batch at the paper's settings — 256 prompts × 16 completions, mini-batch 32
(8 optimizer updates), 1,024-token completions after 256-token prompts, bf16-mixed, gradient
checkpointing, micro-batches of at most `--budget` padded tokens — driven part by part
(`GRPOLearner.updates`, `keep_proximal_logprobs`, then `accumulate` + `optimizer_step` per update)
so a time limit (`--seconds`) can stop it between updates. Reports the seconds of the proximal
pass and of each update, the peak GPU memory (`torch.cuda.max_memory_allocated`) and the memory
plan's estimate of the same configuration (`skillfactory.memory_plan.learner_estimate`, 1 GPU).

`sft`: one `run_sft` step (TRL `SFTTrainer`) at lr 1e-6 on 4,096-token chats, `bf16-mixed` and
pure `bf16`, and the share of the parameters with a non-zero gradient that the step changed
(compared in fp32), with the step's seconds and peak memory.

`--tiny` shrinks everything (hidden 64, 2 layers, vocabulary 2,048, 2 updates of 2 prompts ×
4 completions of 32 tokens) so the script runs on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from skillfactory.engines.base import Completion
from skillfactory.group import Group
from skillfactory.memory_plan import GIB, learner_estimate
from skillfactory.models.shapes import QWEN25_1_5B, ModelShape
from skillfactory.runspec import RunSpec, parse_run_spec
from skillfactory.tasks.base import Problem

TINY = ModelShape(64, 2, 4, 2, 128, 2048, tied_embeddings=True)


def build_model(shape: ModelShape, device: str) -> Any:
    """A Qwen2 model of `shape` with random weights, fp32, on `device`."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        intermediate_size=shape.intermediate,
        vocab_size=shape.vocab,
        tie_word_embeddings=shape.tied_embeddings,
        max_position_embeddings=32768,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.to(device)


def paper_spec(args: argparse.Namespace) -> RunSpec:
    """The paper's GRPO settings at this run's sizes."""
    return parse_run_spec(
        {
            "model": "Qwen/Qwen2.5-1.5B-Instruct",
            "grpo": {
                "group_size": args.group_size,
                "prompts_per_step": args.prompts,
                "mini_batch_size": args.mini_batch,
                "max_prompt_length": args.prompt_tokens,
                "max_response_length": args.completion_tokens,
                "max_tokens_per_micro_batch": args.budget,
                "gradient_checkpointing": True,
                "precision": "bf16-mixed",
                "learning_rate": 1e-6,
                "max_staleness": 0,
            },
        }
    )


def rollout_batch(args: argparse.Namespace, vocab: int) -> list[Group]:
    """`args.prompts` groups of `args.group_size` completions, random tokens, full length."""
    rng = random.Random(0)
    problem = Problem("q", "countdown-3", "?", "1")
    groups = []
    for index in range(args.prompts):
        prompt = [rng.randrange(vocab) for _ in range(args.prompt_tokens)]
        completions = [
            Completion(
                "",
                [rng.randrange(vocab) for _ in range(args.completion_tokens)],
                [-2.0] * args.completion_tokens,
                "length",
                0,
                prompt,
            )
            for _ in range(args.group_size)
        ]
        rewards = [float(rng.random() < 0.5) for _ in range(args.group_size)]
        groups.append(Group(f"p{index}", problem, prompt, completions, rewards, prompt_index=index))
    return groups


def peak_bytes(device: str) -> int:
    return int(torch.cuda.max_memory_allocated()) if device == "cuda" else 0


def run_grpo(args: argparse.Namespace) -> dict[str, Any]:
    from skillfactory.train.learner import GRPOLearner

    shape = TINY if args.tiny else QWEN25_1_5B
    spec = paper_spec(args)
    model = build_model(shape, args.device)
    learner = GRPOLearner(model, spec.grpo, pad_token_id=0)
    groups = rollout_batch(args, shape.vocab)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_bytes(args.device)
    started = time.perf_counter()
    learner.model.train()
    updates = learner.updates(groups)
    learner.keep_proximal_logprobs(updates)
    synchronize(args.device)
    proximal_seconds = time.perf_counter() - started
    update_seconds = []
    for update in updates:
        if update_seconds and time.perf_counter() - started > args.seconds:
            break
        began = time.perf_counter()
        learner.accumulate(update)
        learner.optimizer_step()
        synchronize(args.device)
        update_seconds.append(time.perf_counter() - began)
    estimate = learner_estimate(shape, spec, gpus=1, gpu_memory_gib=args.gpu_memory)
    return {
        "check": "grpo",
        "shape": shape.__dict__,
        "parameters": shape.parameters,
        "rollout_batch": {
            "prompts": args.prompts,
            "group_size": args.group_size,
            "completion_tokens": args.completion_tokens,
            "prompt_tokens": args.prompt_tokens,
        },  # fmt: skip
        "updates_planned": len(updates),
        "updates_run": len(update_seconds),
        "micro_batches_per_update": [len(u.micro_batches) for u in updates],
        "proximal_pass_seconds": round(proximal_seconds, 2),
        "update_seconds": [round(s, 2) for s in update_seconds],
        "seconds_per_update": round(sum(update_seconds) / len(update_seconds), 2),
        "peak_gib": round(peak_bytes(args.device) / GIB, 2),
        "baseline_gib": round(baseline / GIB, 2),
        "plan_total_gib": round(estimate.total_bytes / GIB, 2),
        "plan_items_gib": {i.name: round(i.bytes / GIB, 2) for i in estimate.items},
    }


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_sft(args: argparse.Namespace) -> dict[str, Any]:
    """One SFT step per precision; share of touched weights changed (fp32 comparison)."""
    from safetensors.torch import load_file

    from skillfactory.models.tiny import train_tokenizer
    from skillfactory.runspec import SFTSpec
    from skillfactory.train.sft import read_chat_dataset, run_sft, sft_trainer

    shape = TINY if args.tiny else QWEN25_1_5B
    results: dict[str, Any] = {"check": "sft", "parameters": shape.parameters}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        build_model(shape, "cpu").save_pretrained(folder)
        train_tokenizer().save_pretrained(folder)
        words = " ".join(f"w{i}" for i in range(args.sft_tokens // 2))
        chats = Path(tmp) / "chats.jsonl"
        chats.write_text(json.dumps({"messages": [
            {"role": "user", "content": "Say the words."},
            {"role": "assistant", "content": words}]}) + "\n")  # fmt: skip
        probe = sft_trainer(
            SFTSpec(max_length=args.sft_tokens, precision="fp32"),
            folder,
            read_chat_dataset(chats),
            Path(tmp) / "probe",
        )
        batch = {
            k: v.to(probe.model.device)
            for k, v in probe.data_collator([probe.train_dataset[0]]).items()
        }
        probe.compute_loss(probe.model, batch).backward()
        touched = {
            n: (p.grad != 0).cpu() for n, p in probe.model.named_parameters() if p.grad is not None
        }
        del probe
        start = {k: v.float() for k, v in load_file(folder / "model.safetensors").items()}
        for precision in ("bf16-mixed", "bf16"):
            if args.device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            spec = SFTSpec(
                learning_rate=1e-6, lr_scheduler="constant", warmup_ratio=0.0, num_epochs=1,
                max_length=args.sft_tokens, precision=precision, adam_beta2=0.95,
                weight_decay=1e-4, gradient_checkpointing=True,
            )  # fmt: skip
            began = time.perf_counter()
            result = run_sft(spec, folder, chats, Path(tmp) / precision)
            seconds = time.perf_counter() - began
            after = {}
            for shard in Path(result.model_dir).glob("*.safetensors"):
                after.update({k: v.float() for k, v in load_file(shard).items()})
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            changed = total = 0
            for name, mask in touched.items():
                if name not in after:
                    continue
                changed += int(((after[name] != start[name].to(dtype).float()) & mask).sum())
                total += int(mask.sum())
            results[precision] = {
                "changed_share": round(changed / max(total, 1), 4),
                "seconds": round(seconds, 1),
                "peak_gib": round(peak_bytes(args.device) / GIB, 2),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=["grpo", "sft"])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke-test sizes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--mini-batch", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--completion-tokens", type=int, default=1024)
    parser.add_argument("--budget", type=int, default=16384, help="padded tokens per micro-batch")
    parser.add_argument(
        "--seconds", type=float, default=300, help="stop between updates after this"
    )
    parser.add_argument("--gpu-memory", type=float, default=139.0, help="GiB, for the plan")
    parser.add_argument("--sft-tokens", type=int, default=4096)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.tiny:
        args.prompts, args.group_size, args.mini_batch = 4, 4, 2
        args.prompt_tokens, args.completion_tokens, args.budget, args.sft_tokens = 8, 32, 160, 64
    torch.manual_seed(0)
    result = run_grpo(args) if args.check == "grpo" else run_sft(args)
    line = json.dumps(result)
    print(line)
    if args.json is not None:
        args.json.write_text(line + "\n")


if __name__ == "__main__":
    main()
