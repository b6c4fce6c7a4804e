"""GRPO training throughput, side by side in one run: ours (max_staleness 0 and 2) vs TRL's
`GRPOTrainer`, on the same config-built model, prompts, reward, group size, batch and lengths.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/grpo_vs_trl.py [--steps 8] [--hidden 256]

Both sample with transformers on CPU (TRL: `model.generate`; ours: the transformers engine), at
temperature 1, and train with the token-mean (TRL: `dapo`) loss, no KL, one optimizer step per
batch. The reward is 1 when the first completion token is in a quarter of the vocabulary (a
random model gets ~25 % of it, so groups have a spread). Both sides stop a completion at the
tokenizer's EOS or after `--completion-length` tokens; a random model rarely samples EOS, so most
completions run the full length on both sides.

Reported: training samples (completions) per second over the whole training call, and where the
time goes: generation (inside `generate`) vs the rest (logprobs, loss, backward, optimizer).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

TARGET = range(100, 228)


class TimedEngine:
    """Wraps an engine and adds up the seconds spent in `generate`."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.generate_seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(self, prompts: Any, params: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.engine.generate(prompts, params)
        finally:
            self.generate_seconds += time.perf_counter() - started


def build_model(folder: Path, hidden: int, layers: int) -> Path:
    from skillfactory.models.tiny import build_tiny_model

    return build_tiny_model(
        folder, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers
    )


def prompts(n: int) -> list[str]:
    from skillfactory.tasks import get_task

    return [p.question for p in get_task("countdown-3").problems(n, seed=0)]


def run_ours(model: Path, out: Path, args: argparse.Namespace, staleness: int) -> dict[str, Any]:
    from skillfactory.engines.transformers_engine import TransformersEngine
    from skillfactory.runspec import parse_run_spec
    from skillfactory.stages.grpo import GRPOStage

    spec = parse_run_spec(
        {
            "name": f"ours-s{staleness}",
            "output_dir": str(out),
            "seed": 0,
            "grpo": {
                "task": "countdown-3",
                "num_problems": args.prompts_per_step * args.steps * 2,
                "steps": args.steps,
                "group_size": args.group_size,
                "prompts_per_step": args.prompts_per_step,
                "mini_batch_size": args.prompts_per_step,
                "learning_rate": 1e-5,
                "max_staleness": staleness,
                "max_response_length": args.completion_length,
                "save_steps": args.steps,
            },
        }
    )
    engines: list[TimedEngine] = []

    def factory(path: str) -> Any:
        engines.append(TimedEngine(TransformersEngine(path, device="cpu", max_batch_size=256)))
        return engines[-1]

    def first_token(problem: Any, completion: Any) -> float:
        return 1.0 if completion.token_ids and completion.token_ids[0] in TARGET else 0.0

    stage = GRPOStage(spec, model, factory, score=first_token)
    started = time.perf_counter()
    summary = stage.run()
    wall = time.perf_counter() - started
    steps = [json.loads(line) for line in (out / spec.name / "grpo" / "steps.jsonl").open()]
    samples = summary["samples_trained"]
    return {
        "name": f"ours, max_staleness {staleness}",
        "samples": samples,
        "wall_seconds": wall,
        "samples_per_second": samples / wall,
        "generate_seconds": engines[0].generate_seconds,
        "train_seconds": sum(s["seconds"] for s in steps),
        "learner_wait_seconds": summary["learner_wait_seconds"],
        "reward_first_last": [steps[0]["reward_mean"], steps[-1]["reward_mean"]],
    }


def run_trl(model: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    batch = args.group_size * args.prompts_per_step
    config = GRPOConfig(
        output_dir=str(out / "trl"),
        per_device_train_batch_size=batch,
        num_generations=args.group_size,
        gradient_accumulation_steps=1,
        max_completion_length=args.completion_length,
        max_steps=args.steps,
        learning_rate=1e-5,
        beta=0.0,
        loss_type="dapo",
        temperature=1.0,
        top_p=1.0,
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )

    def first_token(
        completions: list[Any], completion_ids: list[list[int]], **_: Any
    ) -> list[float]:
        return [1.0 if ids and ids[0] in TARGET else 0.0 for ids in completion_ids]

    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": q}]} for q in prompts(batch * args.steps)]
    )
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32),
        reward_funcs=first_token,
        args=config,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(str(model)),
    )
    generate_seconds = 0.0
    inner = trainer.model.generate  # what TRL calls to sample without vLLM

    def timed_generate(*a: Any, **k: Any) -> Any:
        nonlocal generate_seconds
        started = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            generate_seconds += time.perf_counter() - started

    trainer.model.generate = timed_generate  # type: ignore[method-assign]
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    samples = batch * args.steps
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    return {
        "name": "TRL GRPOTrainer",
        "samples": samples,
        "wall_seconds": wall,
        "samples_per_second": samples / wall,
        "generate_seconds": generate_seconds,
        "train_seconds": wall - generate_seconds,
        "learner_wait_seconds": None,
        "reward_first_last": [rewards[0], rewards[-1]] if rewards else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--completion-length", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        model = build_model(out / "model", args.hidden, args.layers)
        results = [run_trl(model, out, args), run_ours(model, out, args, 0)]
        results.append(run_ours(model, out, args, 2))
    baseline = results[0]["samples_per_second"]
    print(
        f"model hidden {args.hidden} × {args.layers} layers, group {args.group_size}, "
        f"{args.prompts_per_step} prompts/step, {args.completion_length} tokens, "
        f"{args.steps} steps, {args.threads} threads"
    )
    print("| trainer | samples/s | vs TRL | wall s | generate s | train s | learner wait s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        wait = "–" if r["learner_wait_seconds"] is None else f"{r['learner_wait_seconds']:.1f}"
        print(
            f"| {r['name']} | {r['samples_per_second']:.2f} | "
            f"{r['samples_per_second'] / baseline:.2f}× | {r['wall_seconds']:.1f} | "
            f"{r['generate_seconds']:.1f} | {r['train_seconds']:.1f} | {wait} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "results": results}, default=str))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
