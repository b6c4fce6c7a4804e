"""Async scaling on one machine: learner throughput with 1 → 2 → 4 (→ 8) samplers.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/async_scaling.py \
        [--samplers 1 2 4 8] [--token-delay-ms 60] [--steps 12] [--prompts-per-step 8] \
        [--group-size 8] [--max-staleness 4] [--hidden 128] [--layers 6]

**A simulation.** Each point starts a real local cluster (`skillfactory up --samplers N
--simulated-token-delay-ms MS`: Redis, the reward, composer and learner services and N rollout
services with one sampler each, as processes on loopback), submits the same GRPO-only run through
the learner API with the bearer token, waits for it, reads the learner's `grpo/steps.jsonl` and
`grpo/summary.json`, and stops the cluster (`skillfactory down`). The rollout engines are the real
transformers engine wrapped in `TokenDelayEngine`: every engine call lasts at least MS × the
longest completion's tokens, so a sampler's time is sleep-bound like a GPU's decode would be,
whatever the two CPU cores of this machine do. Nothing here says how fast a real engine is; it
shows whether the queue, the learner and the staleness bound let more samplers feed the learner
faster, and where the learner becomes the bottleneck.

Model: a random Llama built by `skillfactory.models.tiny.build_tiny_model`, by default wider and
deeper than the tiny model (hidden 128, 6 layers instead of 64 × 2) so that the learner's step
(1.0–1.5 s for 64 samples on one thread of the 2 shared cores here) puts the learner's ceiling
between 4 and 8 samplers; with the 64 × 2 model a step takes ~0.2 s and the learner would only
saturate around 30 samplers.
The engine delay hides the samplers' real compute, so the model size changes the learner's cost,
not the samplers'. The random model rarely emits EOS, so almost every completion is
`--max-response-length` tokens and every engine call takes about the same time.
Rewards are all 0 (throughput does not depend on them); `filter_zero_variance` stays off so no
group is dropped for it.

Throughput is measured after a warm-up (model loads, the first weight syncs and the groups queued
before the first step are outside it): samples trained in steps F+1..K over the time between the
learner's step-F and step-K events (`--from-step` F, default 2; the `RunEvent.time` the learner
stamps on each step's metrics). Also reported: mean staleness of
the trained samples (steps.jsonl `staleness`), the learner's queue-wait seconds over the whole run
(summary `learner_wait_seconds`) and the share of the measured interval the learner spent in its
train steps and weight publishes (steps.jsonl `seconds` + `weight_sync_seconds`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "skillfactory.cli"]
TERMINAL_STATES = {"RUN_STATE_SUCCEEDED", "RUN_STATE_FAILED", "RUN_STATE_CANCELLED"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samplers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--token-delay-ms", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-response-length", type=int, default=16)
    parser.add_argument("--max-staleness", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128, help="tiny model hidden size")
    parser.add_argument("--layers", type=int, default=6, help="tiny model layers")
    parser.add_argument(
        "--from-step", type=int, default=2, help="measure from this step's event to the last"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep cluster folders here")
    return parser.parse_args()


def run_spec(args: argparse.Namespace, model: Path, out: Path, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": str(model),
        "output_dir": str(out),
        "stages": ["grpo"],
        "engine": {"type": "transformers", "max_batch_size": 64},
        "grpo": {
            "task": "csqa",
            "num_problems": 1000,
            "steps": args.steps,
            "group_size": args.group_size,
            "prompts_per_step": args.prompts_per_step,
            "mini_batch_size": args.prompts_per_step,
            "max_staleness": args.max_staleness,
            "filter_zero_variance": False,
            "learning_rate": 1e-4,
            "max_response_length": args.max_response_length,
            "save_steps": args.steps,
        },
    }


def cli(*args: str, timeout: float = 600) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"skillfactory {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def mean_staleness(steps: list[dict[str, Any]]) -> float:
    """Mean staleness of every trained sample (steps.jsonl: completions per staleness)."""
    pairs = [(int(k), n) for s in steps for k, n in s["staleness"].items()]
    return sum(k * n for k, n in pairs) / max(1, sum(n for _, n in pairs))


def run_point(args: argparse.Namespace, samplers: int, model: Path, root: Path) -> dict[str, Any]:
    """One cluster of `samplers` rollout services, one run; returns the measured row."""
    import grpc

    from skillfactory.cluster.local import ClusterState
    from skillfactory.contracts.runspec_proto import run_spec_to_proto
    from skillfactory.runspec import parse_run_spec
    from skillfactory.serving.auth import bearer_metadata
    from skillfactory.v1 import learner_pb2, learner_pb2_grpc, run_pb2

    folder = root / f"cluster-{samplers}"
    out = root / f"runs-{samplers}"
    name = f"scaling-{samplers}"
    started = time.monotonic()
    cli(
        "up",
        "--dir",
        str(folder),
        "--samplers",
        str(samplers),
        "--claim-idle-ms",
        "60000",
        "--model",
        str(model),
        "--simulated-token-delay-ms",
        str(args.token_delay_ms),
    )
    up_seconds = time.monotonic() - started
    try:
        state = ClusterState.load(folder)
        auth = bearer_metadata(Path(state.token_file).read_text().strip())
        with grpc.insecure_channel(state.learner) as channel:
            stub = learner_pb2_grpc.LearnerStub(channel)
            spec = parse_run_spec(run_spec(args, model, out, name))
            request = learner_pb2.SubmitRunRequest(spec=run_spec_to_proto(spec))
            run_id = stub.SubmitRun(request, metadata=auth, timeout=30).run_id
            step_times: dict[int, float] = {}
            final = None
            watch = learner_pb2.WatchRunRequest(run_id=run_id)
            for event in stub.WatchRun(watch, metadata=auth, timeout=900):
                kind = event.WhichOneof("kind")
                if kind == "metrics" and event.stage == "grpo" and event.metrics.values:
                    step_times[int(event.metrics.step)] = event.time.ToNanoseconds() / 1e9
                elif kind == "state" and run_pb2.RunState.Name(event.state) in TERMINAL_STATES:
                    final = run_pb2.RunState.Name(event.state)
                    break
        if final != "RUN_STATE_SUCCEEDED":
            raise RuntimeError(f"run {run_id} ended {final}; see {folder / 'logs'}")
    finally:
        cli("down", "--dir", str(folder), timeout=300)
    total_seconds = time.monotonic() - started

    steps = [
        json.loads(line)
        for line in (out / name / "grpo" / "steps.jsonl").read_text().splitlines()
        if line.strip()
    ]
    summary = json.loads((out / name / "grpo" / "summary.json").read_text())
    last = max(step_times)
    first = args.from_step
    measured = [s for s in steps if first < s["version"] <= last]
    interval = step_times[last] - step_times[first]
    samples = sum(s["samples"] for s in measured)
    return {
        "samplers": samplers,
        "samples_per_s": samples / interval,
        "steps_per_s": len(measured) / interval,
        "interval_s": interval,
        "staleness": mean_staleness(steps),
        "max_staleness_seen": max(int(k) for s in steps for k in s["staleness"]),
        "learner_wait_s": summary["learner_wait_seconds"],
        "learner_busy": sum(s["seconds"] + s["weight_sync_seconds"] for s in measured) / interval,
        "step_seconds": statistics.median(s["seconds"] for s in measured),
        "learner_bound": args.prompts_per_step
        * args.group_size
        / statistics.median(s["seconds"] + s["weight_sync_seconds"] for s in measured),
        "dropped_stale": summary.get("dropped_stale", 0),
        "wall_s": summary["wall_seconds"],
        "up_s": up_seconds,
        "total_s": total_seconds,
    }


def main() -> None:
    args = parse_args()
    if args.prompts_per_step < max(args.samplers):
        raise SystemExit("--prompts-per-step must be at least the largest sampler count")
    import torch

    from skillfactory.models.tiny import build_tiny_model

    torch.set_num_threads(1)
    command = " ".join(
        ["OMP_NUM_THREADS=1 .venv/bin/python benchmarks/async_scaling.py", *sys.argv[1:]]
    )
    temporary = None
    if args.keep is None:
        temporary = tempfile.TemporaryDirectory(prefix="async-scaling-")
        root = Path(temporary.name)
    else:
        root = args.keep.resolve()
        root.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(
        root / "model",
        hidden_size=args.hidden,
        intermediate_size=2 * args.hidden,
        num_hidden_layers=args.layers,
    )
    rows = []
    for samplers in args.samplers:
        row = run_point(args, samplers, model, root)
        rows.append(row)
        print(
            f"# {samplers} sampler(s): {row['samples_per_s']:.2f} samples/s over "
            f"{row['interval_s']:.1f} s (cluster up {row['up_s']:.0f} s, point {row['total_s']:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    if temporary is not None:
        temporary.cleanup()

    per_group = args.max_response_length * args.token_delay_ms / 1000
    print(
        "SIMULATION: sleep-bound rollout engines (TokenDelayEngine, "
        f"{args.token_delay_ms:g} ms per decode step × {args.max_response_length} tokens ≈ "
        f"{per_group:.2f} s per group of {args.group_size}) on {os.cpu_count()} CPU cores "
        f"({platform.machine()}, Python {platform.python_version()}, torch {torch.__version__})."
    )
    print(
        f"GRPO-only run: {args.steps} steps × {args.prompts_per_step} prompts × "
        f"{args.group_size} samples, max_staleness {args.max_staleness}, tiny Llama "
        f"hidden {args.hidden} × {args.layers} layers; throughput from step {args.from_step} "
        f"to step {args.steps}."
    )
    print(f"reproduce: {command}")
    print()
    print(
        "| samplers | learner samples/s | speed-up vs 1 | sampler-bound ceiling "
        "| learner-bound ceiling | mean staleness | max staleness | learner wait s "
        "| learner busy | step s (median) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        speedup = row["samples_per_s"] / rows[0]["samples_per_s"]
        sampler_bound = row["samplers"] * args.group_size / per_group
        print(
            f"| {row['samplers']} | {row['samples_per_s']:.1f} | {speedup:.2f}× "
            f"| {sampler_bound:.1f} | {row['learner_bound']:.1f} | {row['staleness']:.2f} "
            f"| {row['max_staleness_seen']} | {row['learner_wait_s']:.1f} "
            f"| {row['learner_busy']:.0%} | {row['step_seconds']:.2f} |"
        )
    dropped = sum(row["dropped_stale"] for row in rows)
    print()
    print(
        "sampler-bound ceiling = samplers × group size / (tokens × delay); learner-bound ceiling "
        "= samples per step / median (train step + weight publish) seconds; learner busy = "
        "share of the measured interval in train steps and weight publishes; learner wait = "
        f"seconds blocked on the groups queue over the whole run; groups dropped stale: {dropped}."
    )


if __name__ == "__main__":
    main()
