"""GPU checks of issue 4 that are not throughput: our GRPO loss and gradients against TRL's in
bf16, and SFT through `train/sft.py` in bf16, on SmolLM2-135M's shape built from a config.

    PYTHONPATH=pkg python3 benchmarks/gpu_training_check.py crosscheck --json OUT.json
    PYTHONPATH=pkg python3 benchmarks/gpu_training_check.py sft --steps 8 --json OUT.json

`crosscheck`: two groups of 8 completions (same 64-token prompt length, ragged completions up to
128 tokens, random token ids) collated by our learner; for each loss pair (TRL dapo = our
token-mean, grpo = sequence-mean, dr_grpo = dr-grpo) the loss and every parameter's gradient of
`GRPOLearner._loss` (shared-prefix forward, fp32 master weights, bf16 autocast on CUDA) against
`GRPOTrainer._compute_loss` on the same model and batch (TRL's own `bf16=True` autocast). The same
pair is also computed in fp32 (a second TRL trainer with `bf16=False`; our learner without
autocast) to show the bf16 noise floor: how far each side's bf16 result is from its own fp32 one.
Pass: fp32 ours vs TRL within rel 1e-3 (loss and gradient norm-wise); bf16 ours vs TRL with
gradient cosine ≥ 0.99 and relative error ≤ max(5e-2, 3 × the larger noise floor).

`sft`: `skillfactory.train.sft.run_sft` (TRL `SFTTrainer`: bf16 weights and `bf16=True` on CUDA,
gradient checkpointing by TRL's default) on synthetic chats, `--steps` optimizer steps; reports
steps, seconds, steps/s, train loss, peak GPU memory and the saved model's dtype.

`--small` runs both on a tiny shape (CPU smoke test: fp32 only).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from skillfactory.runspec import LossType

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_vs_trl import build_model, describe_model  # noqa: E402

PROMPT_LENGTH, MAX_COMPLETION, GROUP = 64, 128, 8
LOSS_PAIRS: list[tuple[str, LossType]] = [
    ("dapo", "token-mean"),
    ("grpo", "sequence-mean"),
    ("dr_grpo", "dr-grpo"),
]


def model_args(small: bool) -> argparse.Namespace:
    """`grpo_vs_trl.build_model`'s flags: SmolLM2-135M's shape, or a tiny one for CPU."""
    shape: dict[str, Any] = dict(
        hidden=None, layers=None, heads=None, kv_heads=None, intermediate=None, vocab=None
    )
    if small:
        shape.update(hidden=72, layers=2, intermediate=128, vocab=2048)
    return argparse.Namespace(shape="smollm2", **shape)


def groups_for(vocab: int, count: int = 2) -> list[Any]:
    from skillfactory.engines.base import Completion
    from skillfactory.group import Group
    from skillfactory.tasks.base import Problem

    rng = random.Random(0)
    groups = []
    for g in range(count):
        prompt = [rng.randrange(5, vocab) for _ in range(PROMPT_LENGTH)]
        completions = []
        for i in range(GROUP):
            n = MAX_COMPLETION if i == 0 else rng.randrange(8, MAX_COMPLETION + 1)
            ids = [rng.randrange(5, vocab) for _ in range(n)]
            completions.append(Completion("", ids, [-1.0] * n, "stop", 0, prompt))
        rewards = [float(rng.random() < 0.4) for _ in range(GROUP)]
        rewards[g] = 1.0 - rewards[(g + 1) % GROUP]  # a spread in every group
        problem = Problem(f"q{g}", "t", "?", "a")
        groups.append(Group(f"g{g}", problem, prompt, completions, rewards))
    return groups


def zero_reward(completions: list[Any], **_: Any) -> list[float | None]:
    return [0.0] * len(completions)


def trl_trainer(model: Any, tokenizer: Any, out: Path, bf16: bool, cpu: bool) -> Any:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=GROUP * 2,
        num_generations=GROUP,
        max_completion_length=MAX_COMPLETION,
        beta=0.0,
        bf16=bf16,
        use_cpu=cpu,
        gradient_checkpointing=False,
        report_to=[],
        save_strategy="no",
    )
    trainer: Any = GRPOTrainer(
        model=model,
        reward_funcs=zero_reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["the answer is"] * GROUP * 2}),
        processing_class=tokenizer,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by training_step in a real run
    return trainer


def gradients(model: Any) -> dict[str, torch.Tensor]:
    grads = {
        n: p.grad.detach().float().clone()
        for n, p in model.named_parameters()
        if p.grad is not None
    }
    model.zero_grad(set_to_none=True)
    return grads


def compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Norm-wise relative error of `a` against `b` (all parameters, and the worst one) and the
    cosine of the flattened gradients."""
    assert a.keys() == b.keys(), (sorted(a.keys() ^ b.keys()))[:5]
    flat_a = torch.cat([a[n].flatten() for n in sorted(a)])
    flat_b = torch.cat([b[n].flatten() for n in sorted(b)])
    worst = max(((a[n] - b[n]).norm() / b[n].norm()).item() for n in b if b[n].norm().item() > 0)
    return {
        "rel": ((flat_a - flat_b).norm() / flat_b.norm()).item(),
        "worst_param_rel": worst,
        "cosine": torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=0).item(),
    }


def crosscheck(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skillfactory.runspec import GRPOSpec
    from skillfactory.train.learner import GRPOLearner

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model(Path(tmp) / "model", model_args(args.small))
        shape = describe_model(folder)
        model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        trainers = {"fp32": trl_trainer(model, tokenizer, Path(tmp) / "t32", False, not cuda)}
        if cuda:
            trainers["bf16"] = trl_trainer(model, tokenizer, Path(tmp) / "t16", True, False)
    groups = groups_for(model.config.vocab_size)
    tokens = sum(len(c.token_ids) for g in groups for c in g.completions)
    sequences = sum(len(g.completions) for g in groups)
    cases = []
    passed = True
    for trl_loss, our_loss in LOSS_PAIRS:
        spec = GRPOSpec(loss=our_loss, max_response_length=MAX_COMPLETION, max_staleness=0)
        learner = GRPOLearner(model, spec, pad_token_id=tokenizer.pad_token_id or 0)
        (update,) = learner.updates(groups)
        (batch,) = update.micro_batches
        inputs = {
            "prompt_ids": batch.input_ids[:, :PROMPT_LENGTH],
            "prompt_mask": batch.attention_mask[:, :PROMPT_LENGTH],
            "completion_ids": batch.completion_ids,
            "completion_mask": batch.completion_mask,
            "advantages": batch.advantages,
            "num_items_in_batch": batch.completion_mask.sum(),
        }
        results: dict[str, tuple[float, dict[str, torch.Tensor]]] = {}
        for precision, trainer in trainers.items():
            model.zero_grad(set_to_none=True)
            if precision == "fp32":
                learner._mixed_precision = contextlib.nullcontext  # type: ignore[method-assign]
            else:
                del learner._mixed_precision  # back to the class's bf16 autocast on CUDA
            ours = learner._loss(batch, tokens, sequences)
            ours.loss.backward()
            results[f"ours_{precision}"] = (ours.loss.item(), gradients(model))
            trainer.loss_type, trainer.beta = trl_loss, 0.0
            loss = trainer._compute_loss(model, inputs)
            loss.backward()
            results[f"trl_{precision}"] = (loss.item(), gradients(model))
        case: dict[str, Any] = {"trl": trl_loss, "ours": our_loss}
        for name, (loss_value, _) in results.items():
            case[f"loss_{name}"] = loss_value
        fp32 = compare(results["ours_fp32"][1], results["trl_fp32"][1])
        loss_gap = abs(results["ours_fp32"][0] - results["trl_fp32"][0])
        case["fp32_ours_vs_trl"] = {**fp32, "loss_abs": loss_gap}
        ok = fp32["rel"] <= 1e-3 and loss_gap <= 1e-3 * max(1.0, abs(results["trl_fp32"][0]))
        if "trl_bf16" in results:
            bf16 = compare(results["ours_bf16"][1], results["trl_bf16"][1])
            floor_trl = compare(results["trl_bf16"][1], results["trl_fp32"][1])
            floor_ours = compare(results["ours_bf16"][1], results["ours_fp32"][1])
            loss_gap16 = abs(results["ours_bf16"][0] - results["trl_bf16"][0])
            case["bf16_ours_vs_trl"] = {**bf16, "loss_abs": loss_gap16}
            case["bf16_vs_fp32_trl"] = floor_trl
            case["bf16_vs_fp32_ours"] = floor_ours
            limit = max(5e-2, 3 * max(floor_trl["rel"], floor_ours["rel"]))
            case["bf16_rel_limit"] = limit
            ok = ok and bf16["cosine"] >= 0.99 and bf16["rel"] <= limit
            ok = ok and loss_gap16 <= 1e-2 * max(1.0, abs(results["trl_bf16"][0]))
        case["passed"] = ok
        passed = passed and ok
        cases.append(case)
        print(json.dumps(case), flush=True)
    return {
        "check": "crosscheck",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "model": shape,
        "groups": len(groups),
        "completions": sequences,
        "completion_tokens": tokens,
        "cases": cases,
        "passed": passed,
    }


def sft(args: argparse.Namespace) -> dict[str, Any]:
    from skillfactory.runspec import SFTSpec
    from skillfactory.tasks import get_task
    from skillfactory.train.sft import run_sft

    cuda = torch.cuda.is_available()
    words = [
        "let",
        "me",
        "try",
        "again",
        "then",
        "check",
        "this",
        "sample",
        "the",
        "answer",
        "is",
        "correct",
    ]
    rng = random.Random(0)
    batch = 8
    examples = args.steps * batch
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model(Path(tmp) / "model", model_args(args.small))
        shape = describe_model(folder)
        dataset = Path(tmp) / "chats.jsonl"
        with dataset.open("w") as f:
            for problem in get_task("countdown-3").problems(examples, seed=0):
                answer = " ".join(rng.choice(words) for _ in range(args.answer_words))
                messages = [
                    {"role": "user", "content": problem.question},
                    {
                        "role": "assistant",
                        "content": f"<think> {answer} </think> <answer> 1 </answer>",
                    },
                ]
                f.write(json.dumps({"messages": messages}) + "\n")
        spec = SFTSpec(
            learning_rate=1e-5,
            num_epochs=1,
            max_length=1024,
            per_device_batch_size=batch,
            save_steps=10_000,
        )
        gc.collect()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        result = run_sft(spec, folder, dataset, Path(tmp) / "sft")
        seconds = time.perf_counter() - started
        config = json.loads((Path(result.model_dir) / "config.json").read_text())
    return {
        "check": "sft",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "model": shape,
        "examples": examples,
        "batch": batch,
        "steps": result.steps,
        "train_seconds": result.seconds,
        "call_seconds": seconds,
        "steps_per_second": result.steps / result.seconds,
        "train_loss": result.train_loss,
        "saved_dtype": config.get("dtype") or config.get("torch_dtype"),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "passed": result.steps == args.steps and result.train_loss == result.train_loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=("crosscheck", "sft"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="a tiny shape (CPU smoke test)")
    parser.add_argument("--steps", type=int, default=8, help="sft: optimizer steps (batch 8)")
    parser.add_argument("--answer-words", type=int, default=150, help="sft: words per answer")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = crosscheck(args) if args.check == "crosscheck" else sft(args)
    print(json.dumps(result, default=str), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, default=str, indent=1))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
