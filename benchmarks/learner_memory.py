"""Peak memory of one GRPO update: logprobs from full logits (old) vs chunked (new), side by side.

    OMP_NUM_THREADS=2 PYTHONPATH=pkg python benchmarks/learner_memory.py [--json] [--smoke]

The model is a Qwen2 built from its config with Qwen2.5's vocabulary (151,936) and a small body
(hidden 64, 2 layers, tied embeddings as in Qwen2.5-1.5B; random weights, fp32, CPU), so the
logits dominate as they do at the paper's scale. One GRPO update, at each completion length
(256, 512, 1,024, 2,048 tokens), is `--micro-batches` micro-batches of the same token budget
(`--micro-batch-tokens` completion tokens, 4,096: 16 completions of 256 tokens, 2 of 2,048; each
micro-batch one group sharing a 64-token prompt), each a forward through the logprobs,
`grpo_policy_loss` (token-mean, on policy) and backward, the gradients accumulated, then gradient
clipping and an AdamW step:

- old: `rollout_batch.completion_logprobs` (the shared-prefix path: `[B, C, vocab]` logits);
- new: `token_logprobs.chunked_completion_logprobs` with `--chunk-tokens` (256: the run spec's
  default ratio of `logprob_chunk_tokens` 1,024 to `max_tokens_per_micro_batch` 16,384).

How memory is measured. Every (path, length) point runs in a fresh process, forked from this one
after its imports and before any tensor exists, so nothing one point allocated, cached or
fragmented is seen by another (and the 5 s import of transformers is paid once). In the child the
model and AdamW are built, and one tiny update (2 completions of 16 tokens, same path) allocates
the optimizer state and warms torch up; the gradients are then freed (`zero_grad(set_to_none=True)`,
as the learner does) and glibc gives its free heap pages back (`malloc_trim(0)`). The baseline is
the resident set (`VmRSS`) at that moment: model, AdamW moments, libraries. Then the kernel's
high-water mark of the resident set is reset to the current RSS (writing `5` to
`/proc/self/clear_refs`, Linux ≥ 4.0), the measured update runs, and the peak is `VmHWM`
afterwards. The kernel raises the high-water mark before any page leaves the resident set, so no
short-lived peak is missed (a sampling thread could miss one). Peak minus baseline is what the
update needed: gradients, activations, logits, AdamW's temporaries. It can only overstate that:
tensors above 32 MiB (every logits buffer here) are mmapped and unmapped when freed, smaller ones
may stay in glibc's heap after they are freed, which RSS still counts. Torch's allocator is asked
for transparent huge pages (`THP_MEM_ALLOC_ENABLE=1`, set before torch loads): the old path's
gigabyte tensors then fault in 2 MiB pages instead of 4 KiB ones, which halves its run time here;
a tensor's RSS is rounded up to 2 MiB at most.

The acceptance bound (issue 13): for the new path, peak − baseline < a quarter of one fp32
`[micro-batch tokens × vocab]` logits tensor, at every length; the script exits 1 otherwise.
`--json` prints, as its last line, `{"vocab": V, "points": [{"path", "completion_tokens",
"micro_batch_tokens", "baseline_bytes", "peak_bytes"}, ...]}`. `--smoke` shrinks it to one length
(256 tokens, 1,024-token micro-batches, chunks of 64, hidden 32): two points, about half a minute.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import multiprocessing
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

# Read by torch's CPU allocator at its first allocation, so before torch is imported: buffers of
# 2 MiB and more get transparent huge pages (see the module docstring).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402
from torch import Tensor  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from skillfactory.engines.base import Completion  # noqa: E402
from skillfactory.group import Group  # noqa: E402
from skillfactory.tasks.base import Problem  # noqa: E402
from skillfactory.train.grpo_loss import GRPOLossConfig, grpo_policy_loss  # noqa: E402
from skillfactory.train.rollout_batch import (  # noqa: E402
    RolloutBatch,
    collate_groups,
    completion_logprobs,
)
from skillfactory.train.token_logprobs import chunked_completion_logprobs  # noqa: E402

QWEN25_VOCAB = 151_936
LENGTHS = (256, 512, 1024, 2048)
SMOKE_LENGTHS = (256,)
PATHS = ("old", "new")
MIB = 1024**2


@dataclass(frozen=True)
class Point:
    """One measurement, as the JSON line reports it."""

    path: str
    completion_tokens: int
    micro_batch_tokens: int
    baseline_bytes: int
    peak_bytes: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the JSON line last")
    parser.add_argument("--smoke", action="store_true", help="small and quick (seconds)")
    parser.add_argument("--lengths", type=int, nargs="+", help="completion lengths (tokens)")
    parser.add_argument("--micro-batch-tokens", type=int, help="completion tokens per micro-batch")
    parser.add_argument("--micro-batches", type=int, default=2, help="micro-batches per update")
    parser.add_argument("--chunk-tokens", type=int, help="tokens of logits at a time (new path)")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=QWEN25_VOCAB)
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    args = parser.parse_args(argv)
    args.lengths = args.lengths or list(SMOKE_LENGTHS if args.smoke else LENGTHS)
    args.micro_batch_tokens = args.micro_batch_tokens or (1024 if args.smoke else 4096)
    args.chunk_tokens = args.chunk_tokens or (64 if args.smoke else 256)
    args.hidden = args.hidden or (32 if args.smoke else 64)
    for length in args.lengths:
        if args.micro_batch_tokens % length:
            parser.error(f"--micro-batch-tokens must be a multiple of every length ({length})")
    return args


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=args.prompt_tokens + max(args.lengths) + 16,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config).float().train()


def micro_batch(args: argparse.Namespace, completions: int, length: int, seed: int) -> RolloutBatch:
    """One group: a prompt of `--prompt-tokens` and `completions` completions of `length`."""
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(5, args.vocab, (args.prompt_tokens,), generator=generator).tolist()
    rows = [
        Completion(
            text="",
            token_ids=torch.randint(5, args.vocab, (length,), generator=generator).tolist(),
            logprobs=[-12.0] * length,
            finish_reason="length",
            policy_version=0,
            prompt_token_ids=prompt,
        )
        for _ in range(completions)
    ]
    rewards = [float(i % 2) for i in range(completions)]
    group = Group(f"p{seed}", Problem("q", "t", "?", "a"), prompt, rows, rewards)
    advantages = [1.0 if r else -1.0 for r in rewards]
    return collate_groups([group], [advantages], learner_version=0, pad_token_id=0)


def logprobs_path(
    name: str, chunk_tokens: int
) -> Callable[[torch.nn.Module, RolloutBatch], Tensor]:
    if name == "old":
        return completion_logprobs
    return lambda model, batch: (
        chunked_completion_logprobs(model, batch, chunk_tokens=chunk_tokens).logprobs
    )


def grpo_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: list[RolloutBatch],
    logprobs_of: Callable[[torch.nn.Module, RolloutBatch], Tensor],
) -> None:
    """One optimizer update over `batches` (gradient accumulation), as the learner makes it."""
    config = GRPOLossConfig()
    num_tokens = sum(b.num_tokens for b in batches)
    num_sequences = sum(b.completion_ids.shape[0] for b in batches)
    for batch in batches:
        logprobs = logprobs_of(model, batch)
        proximal = logprobs.detach()  # on policy: behaviour = proximal, every weight 1
        output = grpo_policy_loss(
            logprobs,
            proximal,
            proximal,
            batch.advantages,
            batch.completion_mask,
            config,
            num_tokens=num_tokens,
            num_sequences=num_sequences,
        )
        output.loss.backward()
        del logprobs, proximal, output
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def resident_bytes() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    status = Path("/proc/self/status").read_text()
    found = {
        key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024  # type: ignore[union-attr]
        for key in ("VmRSS", "VmHWM")
    }
    return found["VmRSS"], found["VmHWM"]


def release_free_heap() -> None:
    """Give glibc's free heap memory back to the kernel (`malloc_trim(0)`), so that the baseline
    RSS is live memory."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak() -> None:
    """Reset the kernel's resident high-water mark (VmHWM) to the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def measure_point(args: argparse.Namespace, path: str, length: int) -> dict[str, float]:
    """In this (fresh) process: baseline after setup and a warm-up update, then the peak of one
    measured update."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    model = build_model(args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    logprobs_of = logprobs_path(path, args.chunk_tokens)
    grpo_update(model, optimizer, [micro_batch(args, 2, 16, seed=99)], logprobs_of)
    rows = args.micro_batch_tokens // length
    batches = [micro_batch(args, rows, length, seed=i) for i in range(args.micro_batches)]
    gc.collect()
    release_free_heap()
    baseline, _ = resident_bytes()
    reset_peak()
    if resident_bytes()[1] > baseline + 16 * MIB:
        raise RuntimeError("could not reset VmHWM through /proc/self/clear_refs")
    started = time.perf_counter()
    grpo_update(model, optimizer, batches, logprobs_of)
    seconds = time.perf_counter() - started
    _, peak = resident_bytes()
    return {"baseline_bytes": baseline, "peak_bytes": peak, "seconds": seconds}


def run_point(args: argparse.Namespace, path: str, length: int) -> tuple[Point, float]:
    """Measure one point in a fresh child process (forked before anything is allocated; see the
    module docstring)."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_measure_in_child, args=(args, path, length, sender))
    child.start()
    sender.close()
    result = receiver.recv()
    child.join()
    if isinstance(result, str):
        raise RuntimeError(f"point {path}:{length} failed:\n{result}")
    point = Point(
        path=path,
        completion_tokens=length,
        micro_batch_tokens=args.micro_batch_tokens,
        baseline_bytes=int(result["baseline_bytes"]),
        peak_bytes=int(result["peak_bytes"]),
    )
    return point, float(result["seconds"])


def _measure_in_child(args: argparse.Namespace, path: str, length: int, sender: Connection) -> None:
    try:
        sender.send(measure_point(args, path, length))
    except Exception:  # reported by the parent
        sender.send(traceback.format_exc())
    finally:
        sender.close()


def bound_bytes(point: Point, vocab: int) -> int:
    """A quarter of one fp32 `[micro-batch tokens × vocab]` logits tensor."""
    return point.micro_batch_tokens * vocab * 4 // 4


def report(points: list[tuple[Point, float]], args: argparse.Namespace) -> list[str]:
    """The table's lines and whether each new point is under the bound."""
    lines = [
        f"vocab {args.vocab:,}, hidden {args.hidden}, {args.layers} layers, "
        f"{args.micro_batches} micro-batches of {args.micro_batch_tokens:,} completion tokens "
        f"per update, chunks of {args.chunk_tokens} tokens (new), "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '2')}",
        "",
        "| path | completion tokens | completions / micro-batch | baseline MiB | peak MiB "
        "| peak − baseline MiB | ÷ fp32 logits of a micro-batch | update s | under ¼ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for point, seconds in points:
        growth = point.peak_bytes - point.baseline_bytes
        logits = point.micro_batch_tokens * args.vocab * 4
        under = "yes" if growth < bound_bytes(point, args.vocab) else "NO"
        lines.append(
            f"| {point.path} | {point.completion_tokens:,} "
            f"| {point.micro_batch_tokens // point.completion_tokens} "
            f"| {point.baseline_bytes / MIB:,.0f} | {point.peak_bytes / MIB:,.0f} "
            f"| {growth / MIB:,.0f} | {growth / logits:.3f} | {seconds:.1f} "
            f"| {under if point.path == 'new' else '–'} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    points = [run_point(args, path, length) for length in args.lengths for path in args.paths]
    print("\n".join(report(points, args)))
    failed = [
        p
        for p, _ in points
        if p.path == "new" and p.peak_bytes - p.baseline_bytes >= bound_bytes(p, args.vocab)
    ]
    if failed:
        print(
            f"new path above a quarter of the fp32 logits at {[p.completion_tokens for p in failed]}"
        )
    if args.json:
        print(json.dumps({"vocab": args.vocab, "points": [asdict(p) for p, _ in points]}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
