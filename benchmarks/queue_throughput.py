"""Queue throughput: GRPO groups through Redis Streams and through the in-process queue.

Reproduce (starts its own redis-server on a free loopback port, no persistence unless --aof):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/queue_throughput.py --groups 50000

Each message is a realistic `skillfactory.v1.Group`: `--completions` completions of `--tokens`
token ids with their logprobs, 128 prompt token ids, ~4 characters of text per token, rewards.
One producer, one consumer, both the same in each backend:

- the producer stamps `group_id` with its index and `time.monotonic()`, serializes, puts;
- the consumer gets up to 16 entries (blocking), parses each as a `Group`, records put→get
  latency from the stamp (CLOCK_MONOTONIC is one clock for every process on a Linux host), acks
  the batch.

Redis: producer and consumer are separate processes (as samplers and the learner are), the stream
is capped at MAXLEN ~ 4 × window, and the producer keeps at most `--window` entries undelivered
(checks the group's lag every 64 puts), like the dispatcher's admission control — without it Redis
would accept a fast producer's entries without bound. In-process: two threads of one process, the
queue's `max_size` = `--window` (producer blocks when full).

groups/s = groups / (first put → last ack); process start-up is outside it. Latency percentiles
are over every group. Flat out, the queue stays full and put→get latency is mostly queueing
(≈ window / rate); `--rate` paces the producer below capacity to see the transfer latency alone:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/queue_throughput.py --groups 5000 --rate 500
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from skillfactory.queue import InProcessQueue, Queue
from skillfactory.v1 import data_pb2

STREAM, GROUP = "groups", "learner"


def template_group(completions: int, tokens: int) -> data_pb2.Group:
    group = data_pb2.Group(run_id="bench", prompt="x" * 512, policy_version=3, sampler_id="s0")
    group.problem.id = "countdown-000123"
    for j in range(completions):
        group.completions.add(
            text="y" * (4 * tokens),
            token_ids=[(7919 * (j * tokens + k)) % 151_000 for k in range(tokens)],
            logprobs=[-0.01 * ((j + k) % 300) for k in range(tokens)],
            policy_version=3,
            finish_reason=data_pb2.FINISH_REASON_STOP,
            prompt_token_ids=list(range(128)),
        )
        group.rewards.add(value=float(j % 2), correct=bool(j % 2), answer="42")
    return group


def produce(
    queue: Queue,
    n: int,
    template: data_pb2.Group,
    wait_for_room: Callable[[], None] | None,
    rate: float = 0.0,
) -> None:
    """Put n groups; `rate` > 0 paces them at that many per second."""
    group = data_pb2.Group()
    group.CopyFrom(template)
    start = time.monotonic()
    for i in range(n):
        if rate > 0:
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
        if wait_for_room is not None and i % 64 == 0:
            wait_for_room()
        group.group_id = f"{i}|{time.monotonic():.9f}"
        queue.put(STREAM, group.SerializeToString(), timeout=None)


def consume(queue: Queue, n: int) -> tuple[list[float], float, float]:
    """Latencies (s) of all n groups, the first group's put time and the last ack's time."""
    latencies: list[float] = []
    first_put = 0.0
    group = data_pb2.Group()
    while len(latencies) < n:
        entries = queue.get(STREAM, GROUP, "c0", count=16, block_s=5.0)
        for entry in entries:
            group.ParseFromString(entry.payload)
            index, stamp = group.group_id.split("|")
            if index == "0":
                first_put = float(stamp)
            latencies.append(time.monotonic() - float(stamp))
        if entries:
            queue.ack(STREAM, GROUP, [e.id for e in entries])
    return latencies, first_put, time.monotonic()


def _redis_queue(url: str, max_len: int) -> Queue:
    from skillfactory.queue.redis_streams import RedisStreamsQueue

    return RedisStreamsQueue(url, stream_prefix="bench", max_len=max_len)


def _redis_producer(
    url: str, n: int, window: int, completions: int, tokens: int, rate: float
) -> None:
    queue = _redis_queue(url, 4 * window)

    def wait_for_room() -> None:
        while queue.depth(STREAM, GROUP) > window:
            time.sleep(0.001)

    produce(queue, n, template_group(completions, tokens), wait_for_room, rate)
    queue.close()


def _redis_consumer(url: str, n: int, window: int, out: Any) -> None:
    queue = _redis_queue(url, 4 * window)
    out.put(consume(queue, n))
    queue.close()


def run_redis(
    n: int, window: int, completions: int, tokens: int, aof: bool, rate: float
) -> dict[str, Any]:
    from skillfactory.queue.redis_server import RedisServer

    with tempfile.TemporaryDirectory() as tmp, RedisServer(tmp, appendonly=aof) as server:
        queue = _redis_queue(server.url, 4 * window)
        queue.depth(STREAM, GROUP)  # create the group before the first put
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        consumer = ctx.Process(target=_redis_consumer, args=(server.url, n, window, results))
        consumer.start()
        producer = ctx.Process(
            target=_redis_producer, args=(server.url, n, window, completions, tokens, rate)
        )
        producer.start()
        latencies, t0, t_end = results.get()
        producer.join()
        consumer.join()
        lost = n - len(latencies)
        pending = queue.pending(STREAM, GROUP)
        queue.close()
    return _summary("Redis Streams", n, latencies, t0, t_end, lost, pending)


def run_inprocess(
    n: int, window: int, completions: int, tokens: int, rate: float
) -> dict[str, Any]:
    queue = InProcessQueue(max_size=window)
    queue.depth(STREAM, GROUP)
    template = template_group(completions, tokens)
    result: list[tuple[list[float], float, float]] = []
    consumer = threading.Thread(target=lambda: result.append(consume(queue, n)))
    consumer.start()
    produce(queue, n, template, None, rate)
    consumer.join()
    latencies, t0, t_end = result[0]
    summary = _summary("in-process", n, latencies, t0, t_end, 0, queue.pending(STREAM, GROUP))
    queue.close()
    return summary


def _summary(
    name: str,
    n: int,
    latencies: list[float],
    t0: float,
    t_end: float,
    lost: int,
    pending: int,
) -> dict[str, Any]:
    q = statistics.quantiles(latencies, n=100)
    return {
        "backend": name,
        "groups": len(latencies),
        "seconds": t_end - t0,
        "groups_per_s": len(latencies) / (t_end - t0),
        "p50_ms": 1000 * q[49],
        "p99_ms": 1000 * q[98],
        "max_ms": 1000 * max(latencies),
        "lost": lost,
        "pending_after": pending,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=50_000)
    parser.add_argument("--completions", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--window", type=int, default=1024, help="undelivered entries at most")
    parser.add_argument("--aof", action="store_true", help="Redis with appendonly/fsync always")
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="groups/s the producer paces at; 0 = flat out"
    )
    args = parser.parse_args()

    size = len(template_group(args.completions, args.tokens).SerializeToString())
    print(
        f"{args.groups} groups of {args.completions} completions × {args.tokens} tokens "
        f"({size / 1024:.1f} KiB serialized); window {args.window}; "
        f"{'flat out' if args.rate <= 0 else f'paced at {args.rate:g} groups/s'}{'; AOF always' if args.aof else ''}; "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"load {tuple(round(x, 2) for x in os.getloadavg())}"
    )
    shape = (args.groups, args.window, args.completions, args.tokens)
    rows = [run_inprocess(*shape, args.rate)]
    if not args.skip_redis:
        rows.append(run_redis(*shape, args.aof, args.rate))
    print(f"load after {tuple(round(x, 2) for x in os.getloadavg())}")
    print()
    print("| backend | groups | s | groups/s | MiB/s | p50 put→get ms | p99 put→get ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        mib_s = r["groups_per_s"] * size / 2**20
        print(
            f"| {r['backend']} | {r['groups']} | {r['seconds']:.1f} | {r['groups_per_s']:,.0f} "
            f"| {mib_s:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} |"
        )
    for r in rows:
        if r["lost"] or r["pending_after"]:
            print(f"WARNING {r['backend']}: lost {r['lost']}, pending after {r['pending_after']}")


if __name__ == "__main__":
    main()
