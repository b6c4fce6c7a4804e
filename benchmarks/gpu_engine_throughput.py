"""Transformers engine vs plain `model.generate` on a GPU, side by side in one run.

Model: a config-built Llama with SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads, 3 KV
heads, vocab 49152), random weights, bf16. For each batch size, both generate `--tokens` new
tokens per row from the same prompts (pure sampling at temperature 1); the engine is warmed up
once per batch size first (compilation and CUDA-graph capture are reported separately).

    PYTHONPATH=pkg python benchmarks/gpu_engine_throughput.py --batches 1 16 64 256 --tokens 256

On CPU (`--device cpu --small`) it runs a tiny shape without compilation, as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def build_model_folder(path: Path, small: bool) -> Path:
    """SmolLM2-135M's shape (or a tiny one) with random weights and a tokenizer padded to its vocab."""
    from transformers import LlamaForCausalLM

    from skillfactory.models.tiny import smollm2_135m_config, tiny_llama_config, train_tokenizer

    tokenizer = train_tokenizer()
    vocab = 1024 if small else 49152
    tokenizer.add_tokens([f"<x{i}>" for i in range(vocab - len(tokenizer))])
    config = tiny_llama_config(vocab) if small else smollm2_135m_config(vocab)
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def prompts_for(batch: int) -> list[str]:
    """Distinct prompts of similar length."""
    return [
        f"the answer is {i} + {2 * i} = {3 * i}, let me check this sample" for i in range(batch)
    ]


def time_engine(engine: Any, batch: int, tokens: int) -> dict[str, float]:
    """Warm-up (compile + capture) then one timed call."""
    from skillfactory.engines.base import SamplingParams

    params = SamplingParams(n=1, max_tokens=tokens, temperature=1.0, seed=0)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    start = time.perf_counter()
    engine.generate(prompts_for(batch), params)
    sync()
    warm = time.perf_counter() - start
    start = time.perf_counter()
    results = engine.generate(prompts_for(batch), params)
    sync()
    seconds = time.perf_counter() - start
    generated = sum(len(c.token_ids) for r in results for c in r)
    return {"warmup_s": round(warm, 2), "seconds": round(seconds, 3), "tok_s": generated / seconds}


def time_plain_generate(engine: Any, batch: int, tokens: int) -> dict[str, float]:
    """`model.generate` with its default (dynamic) cache on the same prompts, warm."""
    tokenizer, model = engine.tokenizer, engine.model
    tokenizer.padding_side = "left"
    inputs = tokenizer(prompts_for(batch), return_tensors="pt", padding=True).to(engine.device)
    kwargs = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=tokens,
                  min_new_tokens=tokens, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    model.generate(**inputs, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})
    sync()
    start = time.perf_counter()
    out = model.generate(**inputs, **kwargs)
    sync()
    seconds = time.perf_counter() - start
    generated = (out.shape[1] - inputs["input_ids"].shape[1]) * batch
    return {"seconds": round(seconds, 3), "tok_s": generated / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="tiny shape (CPU smoke test)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--backend", default="inductor", choices=["inductor", "cudagraphs"])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    from skillfactory.engines.transformers_engine import TransformersEngine

    with tempfile.TemporaryDirectory() as folder:
        path = build_model_folder(Path(folder), args.small)
        engine = TransformersEngine(path, dtype="bfloat16", device=args.device,
                                    max_batch_size=max(args.batches), compile=not args.no_compile,
                                    compile_backend=args.backend)  # fmt: skip
        rows = []
        for batch in args.batches:
            plain = time_plain_generate(engine, batch, args.tokens)
            ours = time_engine(engine, batch, args.tokens)
            row = {"batch": batch, "plain_tok_s": round(plain["tok_s"], 1),
                   "engine_tok_s": round(ours["tok_s"], 1),
                   "ratio": round(ours["tok_s"] / plain["tok_s"], 2),
                   "engine_warmup_s": ours["warmup_s"]}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.output:
                args.output.write_text(json.dumps(rows, indent=2))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    report = {"device": device, "torch": torch.__version__, "backend": args.backend,
              "tokens": args.tokens, "rows": rows}  # fmt: skip
    print(json.dumps(report, indent=2))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
