"""vLLM engine smoke benchmark: start time and sampling throughput, next to transformers `generate`.

    python benchmarks/vllm_cpu_smoke.py                               # tiny config-built model
    python benchmarks/vllm_cpu_smoke.py --model smollm2-135m-instruct --prompts 32 --n 4 \
        --max-tokens 200 --baseline-prompts 4

Prints one JSON line: engine start seconds, generated tokens/s of `VllmEngine` and of a plain
transformers `generate` loop (sampling, same settings) on the first `--baseline-prompts` prompts,
and their ratio. `--multiprocess` runs vLLM's engine core in a separate process and checks that a
state-dict reload (through a temporary safetensors folder) changes outputs and that reloading the
original folder restores them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

QUESTIONS = [
    f"What is {a} + {b}? Put the answer in <answer></answer> tags."
    for a in range(3, 40, 3)
    for b in (4, 7, 9)
]


def build_prompts(count: int) -> list[Any]:
    return [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}] for i in range(count)]


def transformers_baseline(model_dir: str, prompts: list[Any], n: int, max_tokens: int) -> float:
    """Generated tokens/s of `model.generate` (sampling at temperature 1), one prompt at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokens, started = 0, time.perf_counter()
    for messages in prompts:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        with torch.no_grad():
            out = model.generate(
                ids.repeat(n, 1),
                do_sample=True,
                max_new_tokens=max_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        generated = out[:, ids.shape[1] :]
        tokens += int((generated != tokenizer.pad_token_id).sum())
    return tokens / (time.perf_counter() - started)


def check_reload(engine: Any, model_dir: str) -> bool:
    """Perturbed weights change greedy outputs; the original folder restores them."""
    import torch
    from transformers import AutoModelForCausalLM

    from skillfactory.engines.base import SamplingParams

    greedy = SamplingParams(temperature=0.0, max_tokens=16)
    prompts = build_prompts(3)
    before = [c[0].token_ids for c in engine.generate(prompts, greedy)]
    state = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    engine.load_weights({k: v + 0.05 * torch.randn_like(v) for k, v in state.items()}, version=1)
    changed = [c[0].token_ids for c in engine.generate(prompts, greedy)]
    engine.load_weights(model_dir, version=2)
    restored = [c[0].token_ids for c in engine.generate(prompts, greedy)]
    return changed != before and restored == before and engine.policy_version == 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="path, hub id or short name (default: tiny)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--baseline-prompts", type=int, default=4, help="0 skips the baseline")
    parser.add_argument("--kv-cache-gib", type=int, default=1)
    parser.add_argument("--multiprocess", action="store_true")
    args = parser.parse_args()

    from skillfactory.engines.base import SamplingParams
    from skillfactory.engines.vllm_engine import VllmEngine
    from skillfactory.models.registry import resolve_model

    if args.model is None:
        from skillfactory.models.tiny import build_tiny_model

        shape = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4)
        model_dir = str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny", **shape))
    else:
        model_dir = resolve_model(args.model)

    started = time.perf_counter()
    engine = VllmEngine(
        model_dir, seed=0, kv_cache_gib=args.kv_cache_gib, in_process=not args.multiprocess
    )
    start_s = time.perf_counter() - started
    prompts = build_prompts(args.prompts)
    params = SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_tokens)
    started = time.perf_counter()
    results = engine.generate(prompts, params)
    seconds = time.perf_counter() - started
    tokens = sum(len(c.token_ids) for samples in results for c in samples)
    report: dict[str, Any] = {
        "model": args.model or "tiny",
        "in_process": engine.in_process,
        "omp_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
        "engine_start_s": round(start_s, 1),
        "prompts": args.prompts,
        "n": args.n,
        "max_tokens": args.max_tokens,
        "generated_tokens": tokens,
        "vllm_tok_s": round(tokens / seconds, 1),
    }
    if args.multiprocess:
        report["reload_ok"] = check_reload(engine, model_dir)
    engine.close()
    if args.baseline_prompts:
        baseline = transformers_baseline(
            model_dir, prompts[: args.baseline_prompts], args.n, args.max_tokens
        )
        report["generate_tok_s"] = round(baseline, 1)
        report["ratio"] = round(report["vllm_tok_s"] / baseline, 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
