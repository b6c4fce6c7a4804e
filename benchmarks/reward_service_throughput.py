"""Reward service throughput: graded answers per second through gRPC, next to the in-process
grader rate measured in the same run on the same answers.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reward_service_throughput.py \
        [--answers 100000] [--batch 1000] [--concurrency 1 2] [--formats groups inline] \
        [--rounds 3] [--slices 5]

The server is a real `skillfactory serve reward` process on loopback (plaintext, no token, metrics
off); the client runs in this process. Requests are serialized before the clock starts (the client
sends bytes and keeps the raw responses, parsed and checked after the clock stops), so the
numbers measure the service: transport, parsing the request, grading, serializing the response.

Answers: groups of `--group-size` responses to one problem (as GRPO samples them) over
countdown-4, multiplication-3 and gsm8k, each response the reference answer or a wrong one at
random, wrapped in ~200 characters of reasoning and an `<answer>` tag. Request formats:

- `groups`: each group's responses and its problem, sent once, in a `ScoreGroup`
  (`skillfactory.serving.reward.score_request`);
- `inline`: every item carries its problem (the service still reads each distinct problem of a
  batch once, keyed by its serialized bytes).

Rows:

- in-process `grade`: `skillfactory.tasks.grade(task, problem, response)` on library objects —
  the grader rate the service is compared with;
- in-process `score (FORMAT)`: the servicer's function on the parsed protobuf request (adds
  proto → problem and building the response);
- gRPC, FORMAT, N in flight: the service, with N requests outstanding at a time.

A round sends `--answers` answers down every row, in `--slices` turns: each row in turn runs one
slice of the same batches (so a busy moment on shared cores hits all rows alike), and a row's rate
is its answers over the sum of its slices' seconds. A row's share is the median over rounds of its
rate over that round's `grade` rate. Every reward the service sends back is checked against the
library grader's verdict on the same answer (after the clock stops).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from skillfactory.serving.reward import score, score_request
from skillfactory.tasks import Problem, get_task, grade
from skillfactory.v1 import data_pb2, reward_pb2

REASONING = (
    "Let me work through this step by step. First I look at the quantities given, then I try a "
    "combination and check it against the goal before I commit to an answer.\n"
)
TASKS = ("countdown-4", "multiplication-3", "gsm8k")


def answer_pairs(n: int, group_size: int, seed: int = 0) -> list[tuple[Problem, str]]:
    """`n` (problem, response) pairs over `TASKS` in groups of `group_size` responses to one
    problem (as GRPO samples them), each response right or wrong at random."""
    rng = random.Random(seed)
    n_problems = -(-n // group_size)
    per_task = -(-n_problems // len(TASKS))
    groups = []
    for name in TASKS:
        for problem in get_task(name).problems(per_task, seed=seed):
            right = [rng.random() < 0.5 for _ in range(group_size)]
            answers = [problem.answer if ok else _wrong(problem) for ok in right]
            groups.append([(problem, f"{REASONING}<answer>{a}</answer>") for a in answers])
    rng.shuffle(groups)
    return [pair for group in groups for pair in group][:n]


def _wrong(problem: Problem) -> str:
    if problem.task.startswith("countdown"):
        return " + ".join(str(n) for n in problem.data["numbers"])
    return "12345"


def to_proto(problem: Problem) -> data_pb2.Problem:
    message = data_pb2.Problem(
        id=problem.id, task=problem.task, question=problem.question, answer=problem.answer
    )
    message.data.update(problem.data)
    return message


def inline_request(pairs: list[tuple[Problem, str]]) -> reward_pb2.ScoreRequest:
    """Every item carries its problem (the only format before `ScoreGroup`)."""
    items = [reward_pb2.ScoreItem(problem=to_proto(p), response=r) for p, r in pairs]
    return reward_pb2.ScoreRequest(items=items)


def groups_request(pairs: list[tuple[Problem, str]]) -> reward_pb2.ScoreRequest:
    """Each run of responses to one problem (a group, or the part of it in this batch) is one
    `ScoreGroup`: the problem is sent once."""
    runs = itertools.groupby(pairs, key=lambda pair: pair[0])
    return score_request((to_proto(p), [r for _, r in run]) for p, run in runs)


FORMATS = {"groups": groups_request, "inline": inline_request}


class GradePath:
    """In process: the library grader on library objects."""

    def __init__(self, batches: list[list[tuple[Problem, str]]]) -> None:
        self.batches = batches
        self.tasks = {name: get_task(name) for name in TASKS}

    def verdicts(self) -> list[list[bool]]:
        return [[grade(self.tasks[p.task], p, r).correct for p, r in b] for b in self.batches]

    def run(self, indices: list[int]) -> None:
        tasks = self.tasks
        for index in indices:
            for problem, response in self.batches[index]:
                grade(tasks[problem.task], problem, response)


class ScorePath:
    """In process: the servicer's function on parsed protobuf requests."""

    def __init__(self, requests: list[reward_pb2.ScoreRequest]) -> None:
        self.requests = requests

    def run(self, indices: list[int]) -> None:
        for index in indices:
            score(self.requests[index])


class GrpcPath:
    """The service through one channel, `in_flight` requests outstanding at a time. The client
    sends serialized requests and keeps the raw responses, checked after the clock stops."""

    def __init__(self, address: str, payloads: list[bytes], in_flight: int, max_mb: int) -> None:
        limit = max_mb * 1024 * 1024
        options = [
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
        ]
        self.channel = grpc.insecure_channel(address, options=options)
        self.call = self.channel.unary_unary("/skillfactory.v1.RewardService/Score")  # bytes
        self.call(payloads[0], timeout=60)  # connect and warm up
        self.payloads = payloads
        self.pool = ThreadPoolExecutor(max_workers=in_flight)
        self.answers: list[tuple[int, bytes]] = []

    def run(self, indices: list[int]) -> None:
        send = lambda index: self.call(self.payloads[index], timeout=120)  # noqa: E731
        self.answers += zip(indices, self.pool.map(send, indices), strict=True)

    def check(self, verdicts: list[list[bool]]) -> None:
        for index, raw in self.answers:
            rewards = reward_pb2.ScoreResponse.FromString(raw).rewards
            assert not any(reward.error for reward in rewards)
            got = [reward.correct for reward in rewards]
            assert got == verdicts[index], "the service and the library grader disagree"
        self.answers.clear()

    def close(self) -> None:
        self.pool.shutdown()
        self.channel.close()


def start_server(max_message_mb: int) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable, "-m", "skillfactory.cli", "serve", "reward", "--port", "0",
        "--metrics-port", "-1", "--max-message-mb", str(max_message_mb), "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    ready = json.loads(process.stdout.readline())
    return process, str(ready["address"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=100_000, help="answers sent through gRPC")
    parser.add_argument("--batch", type=int, default=1000, help="answers per request")
    parser.add_argument("--distinct", type=int, default=20, help="distinct batches, cycled")
    parser.add_argument("--group-size", type=int, default=8, help="responses per problem")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--formats", nargs="+", choices=FORMATS, default=list(FORMATS), help="request formats"
    )
    parser.add_argument("--max-message-mb", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="measurements of every path")
    parser.add_argument("--slices", type=int, default=5, help="turns each path takes per round")
    args = parser.parse_args()

    pairs = answer_pairs(args.batch * args.distinct, args.group_size)
    batches = [pairs[i : i + args.batch] for i in range(0, len(pairs), args.batch)]
    requests = {name: [FORMATS[name](b) for b in batches] for name in args.formats}
    payloads = {name: [r.SerializeToString() for r in rs] for name, rs in requests.items()}
    per_slice = args.answers // args.batch // args.slices  # requests per slice and path
    answers = per_slice * args.slices * args.batch  # per path and round

    grade_path = GradePath(batches)
    verdicts = grade_path.verdicts()  # one pass: the verdicts, and a warm-up
    paths: dict[str, Any] = {"in-process grade": grade_path}
    paths |= {f"in-process score ({f})": ScorePath(requests[f]) for f in args.formats}
    rates: dict[str, list[float]] = {path: [] for path in paths}
    shares: dict[str, list[float]] = {path: [] for path in paths}
    load_before = os.getloadavg()
    process, address = start_server(args.max_message_mb)
    try:
        for f in args.formats:
            for n in args.concurrency:
                paths[f"gRPC, {f}, {n} in flight"] = GrpcPath(
                    address, payloads[f], n, args.max_message_mb
                )
                rates[f"gRPC, {f}, {n} in flight"], shares[f"gRPC, {f}, {n} in flight"] = [], []
        for _ in range(args.rounds):
            # Every path runs a slice in turn, so a busy moment of the shared cores hits all
            # paths alike; a path's rate is its answers over the sum of its slices' seconds.
            seconds = dict.fromkeys(paths, 0.0)
            for part in range(args.slices):
                first = part * per_slice
                indices = [(first + i) % len(batches) for i in range(per_slice)]
                for name, path in paths.items():
                    start = time.perf_counter()
                    path.run(indices)
                    seconds[name] += time.perf_counter() - start
            for name, path in paths.items():
                if isinstance(path, GrpcPath):
                    path.check(verdicts)
                rates[name].append(answers / seconds[name])
                shares[name].append(seconds["in-process grade"] / seconds[name])
    finally:
        for path in paths.values():
            if isinstance(path, GrpcPath):
                path.close()
        process.terminate()
        process.wait(timeout=60)

    sizes = ", ".join(f"{name} {len(p[0]) / 1024:.0f} KiB" for name, p in payloads.items())
    print(f"payload per request of {args.batch} answers: {sizes}; "
          f"{answers:,} answers per path per round in {args.slices} slices, "
          f"{args.rounds} rounds")  # fmt: skip
    load = "load average (1, 5, 15 min) {:.2f} / {:.2f} / {:.2f}"
    print(f"{load.format(*load_before)} before, {load.format(*os.getloadavg())} after")
    print("| path | answers/s (median) | min–max | vs in-process grade (median of rounds) |")
    print("|---|---:|---:|---:|")
    for path in paths:
        low, high = min(rates[path]), max(rates[path])
        print(
            f"| {path} | {statistics.median(rates[path]):,.0f} | {low:,.0f}–{high:,.0f} "
            f"| {statistics.median(shares[path]):.0%} |"
        )
    print(json.dumps({"rates": rates, "shares": shares}))


if __name__ == "__main__":
    main()
