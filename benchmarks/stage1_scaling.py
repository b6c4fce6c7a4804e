"""Stage 1 (or eval) on the rollout fleet: problems per second with 1, 2 and 4 rollout services.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stage1_scaling.py [--rollouts 1 2 4] \
        [--stage data|eval] [--token-delay-ms 20] [--problems 32] [--json]

**A simulation.** Each point starts a real local cluster (`skillfactory up --samplers N
--engine simulated --simulated-token-delay-ms MS`: Redis, the reward, composer and learner
services and N rollout services, as processes on loopback), submits a data-only (or eval-only)
run through the learner API, and stops the cluster. The rollout engines are the seeded text
engine: completions a function of prompt and seed, each engine call lasting MS × its longest
completion's tokens — sleep-bound like a GPU's decode, whatever the two CPU cores here do. Each
rollout service merges its generation workers' tasks into calls of at most `--max-batch-size`
rows, so one service's throughput is one call of that many rows per call time, and N services
should give N times that while the stage has enough tasks in flight.

Throughput: problems of the stage over the time between its `started` and `finished` run events
(the learner's clock); stage 1 includes composing the traces. The last line with `--json` is
`{"stage": …, "points": [{"rollouts": N, "problems_per_s": X, "speedup": S}, ...]}`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "skillfactory.cli"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--stage", choices=["data", "eval"], default="data")
    parser.add_argument("--token-delay-ms", type=float, default=20.0)
    parser.add_argument(
        "--problems", type=int, default=None, help="default: 64 for data, 1024 for eval"
    )
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


def run_spec(args: argparse.Namespace, model: Path, out: Path, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "model": str(model),  # only named: the simulated engine runs no model
        "output_dir": str(out),
        "stages": [args.stage],
        "engine": {"type": "simulated", "max_batch_size": 1024},  # stage-1 chunks of 64 problems
        "data": {
            "task": "csqa",
            # eval holds out stage 1's training questions: keep them few when measuring eval
            "num_problems": args.problems if args.stage == "data" else 1,
            "samples_per_variant": 4,
            "reflections_per_sample": 2,
            "sampling": {"max_tokens": 64},
            "reflection_sampling": {"max_tokens": 64},
        },
        "eval": {
            "tasks": ["csqa"],
            "num_problems": args.problems,
            "samples_per_problem": 4,
            "max_tokens": 64,
        },
    }
    return spec


def cli(*args: str, timeout: float = 600) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"skillfactory {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def run_point(args: argparse.Namespace, rollouts: int, root: Path, model: Path) -> dict[str, Any]:
    """One cluster of `rollouts` services, one run; returns the measured row."""
    import grpc

    from skillfactory.cluster.local import ClusterState
    from skillfactory.contracts.runspec_proto import run_spec_to_proto
    from skillfactory.runspec import parse_run_spec
    from skillfactory.serving.auth import bearer_metadata
    from skillfactory.v1 import learner_pb2, learner_pb2_grpc, run_pb2

    folder = root / f"cluster-{rollouts}"
    up = ["up", "--dir", str(folder), "--samplers", str(rollouts), "--engine", "simulated"]
    up += ["--simulated-token-delay-ms", str(args.token_delay_ms), "--gpus", "0"]
    cli(*up)
    times: dict[str, float] = {}
    try:
        state = ClusterState.load(folder)
        auth = bearer_metadata(Path(state.token_file).read_text().strip())
        with grpc.insecure_channel(state.learner) as channel:
            stub = learner_pb2_grpc.LearnerStub(channel)
            spec = parse_run_spec(run_spec(args, model, root / f"runs-{rollouts}", "scaling"))
            request = learner_pb2.SubmitRunRequest(spec=run_spec_to_proto(spec))
            run_id = stub.SubmitRun(request, metadata=auth, timeout=30).run_id
            watch = learner_pb2.WatchRunRequest(run_id=run_id)
            for event in stub.WatchRun(watch, metadata=auth, timeout=900):
                words = event.message.split()
                if event.stage == args.stage and words and words[0] in ("started", "finished"):
                    times[words[0]] = event.time.ToNanoseconds() / 1e9
                if event.WhichOneof("kind") == "state" and event.state in (
                    run_pb2.RUN_STATE_SUCCEEDED,
                    run_pb2.RUN_STATE_FAILED,
                    run_pb2.RUN_STATE_CANCELLED,
                ):
                    if event.state != run_pb2.RUN_STATE_SUCCEEDED:
                        raise RuntimeError(f"run ended {event.state}; see {folder / 'logs'}")
                    break
    finally:
        cli("down", "--dir", str(folder), timeout=300)
    seconds = times["finished"] - times["started"]
    return {"rollouts": rollouts, "seconds": seconds, "problems_per_s": args.problems / seconds}


def main() -> None:
    args = parse_args()
    args.problems = args.problems or (64 if args.stage == "data" else 1024)
    command = " ".join(
        ["OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stage1_scaling.py", *sys.argv[1:]]
    )
    started = time.monotonic()
    points = []
    from skillfactory.models.tiny import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="stage1-scaling-") as root:
        model = build_tiny_model(Path(root) / "model")
        for rollouts in args.rollouts:
            point = run_point(args, rollouts, Path(root), model)
            points.append(point)
            print(
                f"# {rollouts} rollout(s): {point['problems_per_s']:.2f} problems/s "
                f"({point['seconds']:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    base = points[0]["problems_per_s"]
    for point in points:
        point["speedup"] = point["problems_per_s"] / base
    print(
        f"SIMULATION: seeded text engine, {args.token_delay_ms:g} ms per decode step; "
        f"{args.stage} of {args.problems} CommonsenseQA problems; {os.cpu_count()} CPU cores; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    print(f"reproduce: {command}")
    print("| rollouts | problems/s | speed-up |")
    print("|---:|---:|---:|")
    for point in points:
        print(f"| {point['rollouts']} | {point['problems_per_s']:.2f} | {point['speedup']:.2f}× |")
    if args.json:
        print(json.dumps({"stage": args.stage, "points": [
            {k: point[k] for k in ("rollouts", "problems_per_s", "speedup")} for point in points
        ]}))  # fmt: skip


if __name__ == "__main__":
    main()
