"""GRPO training throughput, side by side in one run: ours (max_staleness 0 and 2) vs TRL's
`GRPOTrainer`, on the same config-built model, prompts, reward, group size, batch and lengths.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/grpo_vs_trl.py [--steps 8] [--hidden 256]
    PYTHONPATH=pkg python3 benchmarks/grpo_vs_trl.py --device cuda --shape smollm2 \
        --steps 6 --prompts-per-step 8 --completion-length 256      # the GPU check (bf16)

Both sample with transformers (TRL: `model.generate`; ours: the transformers engine, which on a
GPU decodes over a static KV cache with the step compiled as CUDA graphs), at temperature 1, and
train with the token-mean (TRL: `dapo`) loss, no KL, one optimizer step per batch. The reward is 1
when the first completion token is in a fixed quarter of the vocabulary (a random model gets ~25 %
of it, so groups have a spread). Both sides stop a completion at the tokenizer's EOS or after
`--completion-length` tokens; a random model rarely samples EOS, so most completions run the full
length on both sides.

Models: `--shape tiny` (default) is the tiny Llama of the tests (hidden 256 × 4 layers, its
512-token tokenizer); `--shape smollm2` is SmolLM2-135M's shape built from a config (hidden 576,
30 layers, 9 heads, 3 KV heads, intermediate 1536, vocab 49152, tied embeddings; the tiny
tokenizer padded with added tokens up to the vocab). `--hidden`, `--layers`, `--heads`,
`--kv-heads`, `--intermediate` and `--vocab` override either (e.g. a CPU smoke run of the GPU
command). Random weights; nothing is downloaded. Both trainers keep fp32 master weights; on CUDA
`--bf16` (the default there) trains in bf16 autocast (TRL: `bf16=True`; ours: the learner's
autocast) and our engine samples with a bf16 copy.

Reported: training samples (completions) per second over the whole training call, where the time
goes (generation, i.e. inside `generate`, vs the rest: logprobs, loss, backward, optimizer), the
steady step time (mean interval between optimizer steps after the first, our final checkpoint
write left out) and, on CUDA, peak GPU memory (`torch.cuda.max_memory_allocated`).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

TRAINERS = ("trl", "ours0", "ours2", "trl-nogc")
"""`trl`: TRL with its defaults (gradient checkpointing on); `ours0` / `ours2`: ours at
max_staleness 0 / 2; `trl-nogc`: TRL with gradient checkpointing off."""


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


def model_config(args: argparse.Namespace, tokenizer_size: int) -> Any:
    """The Llama config of `--shape`, with the size flags that were given applied."""
    from skillfactory.models.tiny import smollm2_135m_config, tiny_llama_config

    if args.shape == "smollm2":
        config = smollm2_135m_config(args.vocab or 49152)
    else:
        hidden = args.hidden or 256
        config = tiny_llama_config(
            args.vocab or tokenizer_size,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=args.layers or 4,
        )
    overrides = {
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "intermediate_size": args.intermediate,
    }
    for name, value in overrides.items():
        if value is not None:
            setattr(config, name, value)
    if args.hidden is not None or args.heads is not None:
        config.head_dim = config.hidden_size // config.num_attention_heads
    return config


def build_model(folder: Path, args: argparse.Namespace) -> Path:
    """A random-weight model folder (fp32) of `--shape`, with the tiny tokenizer padded to the
    config's vocab by added tokens."""
    from transformers import LlamaForCausalLM

    from skillfactory.models.tiny import train_tokenizer

    tokenizer = train_tokenizer()
    config = model_config(args, len(tokenizer))
    if config.vocab_size > len(tokenizer):
        tokenizer.add_tokens([f"<x{i}>" for i in range(config.vocab_size - len(tokenizer))])
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def describe_model(folder: Path) -> str:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(folder))
    return (
        f"Llama hidden {c.hidden_size} × {c.num_hidden_layers} layers, heads "
        f"{c.num_attention_heads}/{c.num_key_value_heads} KV, intermediate "
        f"{c.intermediate_size}, vocab {c.vocab_size}, tied {c.tie_word_embeddings}"
    )


def target_tokens(vocab: int) -> range:
    """A quarter of the vocabulary (100..227 of the tiny 512-token one)."""
    return range(vocab * 100 // 512, vocab * 228 // 512)


def prompts(n: int) -> list[str]:
    from skillfactory.tasks import get_task

    return [p.question for p in get_task("countdown-3").problems(n, seed=0)]


def cuda_sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def steady_step_seconds(step_ends: list[float], excluded: float = 0.0) -> float | None:
    """Mean interval between optimizer steps after the first (`excluded` seconds taken out)."""
    if len(step_ends) < 2:
        return None
    return (step_ends[-1] - step_ends[0] - excluded) / (len(step_ends) - 1)


def run_ours(model: Path, out: Path, args: argparse.Namespace, staleness: int) -> dict[str, Any]:
    from skillfactory.engines.transformers_engine import TransformersEngine
    from skillfactory.rollout.scoring import per_completion
    from skillfactory.runspec import parse_run_spec
    from skillfactory.stages.grpo import GRPOStage

    rows = args.group_size * args.prompts_per_step
    batch_rows = max(64, rows)
    spec = parse_run_spec(
        {
            "name": f"ours-s{staleness}",
            "output_dir": str(out),
            "seed": 0,
            "engine": {"type": "transformers", "device": args.device, "max_batch_size": batch_rows},
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
    target = target_tokens(args.vocab_size)

    def factory(path: str) -> Any:
        engine = TransformersEngine(
            path, device=args.device, max_batch_size=batch_rows, compile=not args.no_compile
        )
        engines.append(TimedEngine(engine))
        return engines[-1]

    def first_token(problem: Any, completion: Any) -> float:
        return 1.0 if completion.token_ids and completion.token_ids[0] in target else 0.0

    checkpoint_seconds = [0.0]

    class Stage(GRPOStage):
        def build_learner(self) -> Any:
            learner = super().build_learner()
            save = learner.save_checkpoint

            def timed_save(*a: Any, **k: Any) -> Any:
                started = time.perf_counter()
                try:
                    return save(*a, **k)
                finally:
                    checkpoint_seconds[0] += time.perf_counter() - started

            learner.save_checkpoint = timed_save
            return learner

    step_ends: list[float] = []
    reset_memory()
    stage = Stage(spec, model, factory, score=per_completion(first_token))
    started = time.perf_counter()
    summary = stage.run(on_step=lambda record: step_ends.append(time.perf_counter()))
    cuda_sync()
    wall = time.perf_counter() - started
    peak = peak_gib()
    steps = [json.loads(line) for line in (out / spec.name / "grpo" / "steps.jsonl").open()]
    samples = summary["samples_trained"]
    generate_seconds = sum(e.generate_seconds for e in engines)
    for engine in engines:
        engine.close()
    # The final checkpoint is written before the last step's on_step: take it out of the steady
    # step time (it is in the wall time, as TRL's `save_strategy="no"` writes none).
    return {
        "name": f"ours, max_staleness {staleness}",
        "samples": samples,
        "wall_seconds": wall,
        "samples_per_second": samples / wall,
        "generate_seconds": generate_seconds,
        "train_seconds": sum(s["seconds"] for s in steps),
        "learner_wait_seconds": summary["learner_wait_seconds"],
        "first_step_seconds": step_ends[0] - started if step_ends else None,
        "steady_step_seconds": steady_step_seconds(step_ends, checkpoint_seconds[0]),
        "checkpoint_seconds": checkpoint_seconds[0],
        "learner_step_seconds": [round(s["seconds"], 3) for s in steps],
        "peak_gib": peak,
        "reward_first_last": [steps[0]["reward_mean"], steps[-1]["reward_mean"]],
    }


def run_trl(
    model: Path, out: Path, args: argparse.Namespace, gradient_checkpointing: bool | None = None
) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    batch = args.group_size * args.prompts_per_step
    cpu = args.device == "cpu"
    extra: dict[str, Any] = {}
    if gradient_checkpointing is not None:
        extra["gradient_checkpointing"] = gradient_checkpointing
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
        use_cpu=cpu,
        bf16=args.bf16,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        **extra,
    )
    target = target_tokens(args.vocab_size)

    def first_token(
        completions: list[Any], completion_ids: list[list[int]], **_: Any
    ) -> list[float | None]:
        return [1.0 if ids and ids[0] in target else 0.0 for ids in completion_ids]

    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *a: Any, **k: Any) -> None:
            step_ends.append(time.perf_counter())

    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": q}]} for q in prompts(batch * args.steps)]
    )
    reset_memory()
    trainer: Any = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32),
        reward_funcs=first_token,
        args=config,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(str(model)),
        callbacks=[StepClock()],
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

    trainer.model.generate = timed_generate
    started = time.perf_counter()
    trainer.train()
    cuda_sync()
    wall = time.perf_counter() - started
    peak = peak_gib()
    samples = batch * args.steps
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    checkpointing = bool(trainer.args.gradient_checkpointing)
    del trainer
    reset_memory()
    return {
        "name": "TRL GRPOTrainer" + ("" if checkpointing else ", no gradient checkpointing"),
        "samples": samples,
        "wall_seconds": wall,
        "samples_per_second": samples / wall,
        "generate_seconds": generate_seconds,
        "train_seconds": wall - generate_seconds,
        "learner_wait_seconds": None,
        "first_step_seconds": step_ends[0] - started if step_ends else None,
        "steady_step_seconds": steady_step_seconds(step_ends),
        "gradient_checkpointing": checkpointing,
        "peak_gib": peak,
        "reward_first_last": [rewards[0], rewards[-1]] if rewards else None,
    }


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def print_table(args: argparse.Namespace, model_line: str, results: list[dict[str, Any]]) -> None:
    baseline = results[0]["samples_per_second"]
    base_step = results[0].get("steady_step_seconds")
    print(
        f"model {model_line}; group {args.group_size}, {args.prompts_per_step} prompts/step, "
        f"{args.completion_length} tokens, {args.steps} steps, device {args.device}"
        f"{' (' + args.device_name + ')' if args.device_name else ''}, "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}, {args.threads} threads"
    )
    print(
        "| trainer | samples/s | vs TRL | wall s | generate s | train s | learner wait s "
        "| first step s | steady step s | step rate vs TRL | peak GiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        wait = "–" if r["learner_wait_seconds"] is None else f"{r['learner_wait_seconds']:.1f}"
        step = r.get("steady_step_seconds")
        rate = f"{base_step / step:.2f}×" if base_step and step else "–"
        print(
            f"| {r['name']} | {r['samples_per_second']:.2f} | "
            f"{r['samples_per_second'] / baseline:.2f}× | {r['wall_seconds']:.1f} | "
            f"{r['generate_seconds']:.1f} | {r['train_seconds']:.1f} | {wait} | "
            f"{fmt(r.get('first_step_seconds'))} | {fmt(step, 2)} | {rate} | "
            f"{fmt(r.get('peak_gib'), 2)} |"
        )
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--completion-length", type=int, default=64)
    parser.add_argument("--shape", choices=("tiny", "smollm2"), default="tiny")
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--kv-heads", type=int)
    parser.add_argument("--intermediate", type=int)
    parser.add_argument("--vocab", type=int)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: on for cuda, off for cpu)",
    )
    parser.add_argument("--no-compile", action="store_true", help="our engine without CUDA graphs")
    parser.add_argument(
        "--trainers",
        default="trl,ours0,ours2",
        help=f"comma-separated, in order, from {', '.join(TRAINERS)}; the first is the baseline",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="Also write the results here (after each).")
    args = parser.parse_args()
    trainers = args.trainers.split(",")
    if unknown := set(trainers) - set(TRAINERS):
        parser.error(f"unknown trainers {sorted(unknown)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no GPU")
    if args.bf16 is None:
        args.bf16 = args.device == "cuda"
    if args.bf16 and args.device == "cpu":
        parser.error("--bf16 is for --device cuda (TRL refuses bf16 on CPU)")
    args.device_name = torch.cuda.get_device_name() if args.device == "cuda" else ""
    torch.set_num_threads(args.threads)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        model = build_model(out / "model", args)
        from transformers import AutoConfig

        args.vocab_size = AutoConfig.from_pretrained(str(model)).vocab_size
        model_line = describe_model(model)
        print(model_line, flush=True)
        for name in trainers:
            if name == "trl":
                result = run_trl(model, out, args)
            elif name == "trl-nogc":
                result = run_trl(model, out, args, gradient_checkpointing=False)
            else:
                result = run_ours(model, out / name, args, int(name[-1]))
            results.append(result)
            print(json.dumps(result, default=str), flush=True)
            if args.json:
                record = {"args": vars(args), "model": model_line, "results": results}
                args.json.write_text(json.dumps(record, default=str, indent=1))
            print_table(args, model_line, results)  # after each, so a cut-off run keeps one


if __name__ == "__main__":
    main()
