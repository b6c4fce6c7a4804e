"""Reward service throughput: graded answers per second through gRPC, next to the in-process
grader rate measured in the same run on the same answers.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reward_service_throughput.py \
        [--answers 100000] [--batch 1000] [--concurrency 1 2] [--formats groups inline] [--rounds 3]

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

Every round measures every row once, interleaved (a busy moment on shared cores hits all rows
alike); a row's share is the median over rounds of its rate over that round's `grade` rate. Every
reward of every response is checked against the library grader's verdict.
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


def in_process_grade_rate(
    pairs: list[tuple[Problem, str]], answers: int
) -> tuple[float, list[bool]]:
    """Answers/s of the library grader over `answers` answers (cycling `pairs`), and its
    verdicts on `pairs`."""
    tasks = {name: get_task(name) for name in TASKS}
    cycles = max(1, answers // len(pairs))
    start = time.perf_counter()
    for _ in range(cycles):
        verdicts = [grade(tasks[p.task], p, response).correct for p, response in pairs]
    return cycles * len(pairs) / (time.perf_counter() - start), verdicts


def in_process_score_rate(
    requests: list[reward_pb2.ScoreRequest], answers: int, batch: int
) -> float:
    """Answers/s of the servicer's `score` on parsed requests (of `batch` answers each) over
    `answers` answers."""
    n_requests = max(1, answers // batch)
    start = time.perf_counter()
    graded = sum(len(score(requests[i % len(requests)]).rewards) for i in range(n_requests))
    return graded / (time.perf_counter() - start)


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


def grpc_rate(
    address: str, payloads: list[bytes], answers: int, batch: int, in_flight: int, max_mb: int
) -> tuple[float, list[list[bool]]]:
    """Answers/s sending `answers // batch` requests (cycling `payloads`), `in_flight` at a time;
    and the verdicts of every request (checked after the clock stops)."""
    limit = max_mb * 1024 * 1024
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    with grpc.insecure_channel(address, options=options) as channel:
        call = channel.unary_unary("/skillfactory.v1.RewardService/Score")  # bytes in, bytes out
        call(payloads[0], timeout=60)  # connect and warm up
        requests = [payloads[i % len(payloads)] for i in range(answers // batch)]
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=in_flight) as pool:
            raw = list(pool.map(lambda payload: call(payload, timeout=120), requests))
        seconds = time.perf_counter() - start
    responses = [reward_pb2.ScoreResponse.FromString(r) for r in raw]
    assert sum(len(r.rewards) for r in responses) == len(requests) * batch
    assert not any(reward.error for r in responses for reward in r.rewards)
    return len(requests) * batch / seconds, [[w.correct for w in r.rewards] for r in responses]


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
    args = parser.parse_args()

    pairs = answer_pairs(args.batch * args.distinct, args.group_size)
    batches = [pairs[i : i + args.batch] for i in range(0, len(pairs), args.batch)]
    requests = {name: [FORMATS[name](b) for b in batches] for name in args.formats}
    payloads = {name: [r.SerializeToString() for r in rs] for name, rs in requests.items()}

    _, verdicts = in_process_grade_rate(pairs, 0)  # one pass: the verdicts, and a warm-up
    batch_verdicts = [verdicts[i : i + args.batch] for i in range(0, len(pairs), args.batch)]
    paths = ["in-process grade"] + [f"in-process score ({name})" for name in args.formats]
    paths += [f"gRPC, {name}, {n} in flight" for name in args.formats for n in args.concurrency]
    rates: dict[str, list[float]] = {path: [] for path in paths}
    shares: dict[str, list[float]] = {path: [] for path in paths}
    load_before = os.getloadavg()
    process, address = start_server(args.max_message_mb)
    try:
        for _ in range(args.rounds):  # interleaved, so a busy moment hits every path alike
            round_rates = [in_process_grade_rate(pairs, args.answers)[0]]
            round_rates += [
                in_process_score_rate(requests[f], args.answers, args.batch) for f in args.formats
            ]
            for name in args.formats:
                for in_flight in args.concurrency:
                    rate, got = grpc_rate(
                        address, payloads[name], args.answers, args.batch, in_flight,
                        args.max_message_mb,
                    )  # fmt: skip
                    expected = [batch_verdicts[i % len(batches)] for i in range(len(got))]
                    assert got == expected, "the service and the library grader disagree"
                    round_rates.append(rate)
            for path, rate in zip(paths, round_rates, strict=True):
                rates[path].append(rate)
                shares[path].append(rate / round_rates[0])
    finally:
        process.terminate()
        process.wait(timeout=60)

    sizes = ", ".join(f"{name} {len(p[0]) / 1024:.0f} KiB" for name, p in payloads.items())
    print(f"payload per request of {args.batch} answers: {sizes}; "
          f"{args.answers:,} answers per path per round, {args.rounds} rounds")  # fmt: skip
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
