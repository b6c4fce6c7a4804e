"""Composer throughput: problems per second, 64 samples × 4 reflections each, on one core.

What is timed, per problem: one JSONL input line → validated record (verdicts parsed) → verdict
filter → Algorithm 1 → trace text → JSONL output lines (no file I/O; `correct` is given, so no
grading — graders have their own benchmark).

Baseline, measured in the same run on the same inputs: a literal, naive transcription of
Algorithm 1 that recomputes Y+ and Y− before every trace by re-parsing every reflection's verdict
and every sample's answer (list comprehensions over all 256 reflections, `list.remove` for drawn
pairs) and formats the trace the same way. It is what one writes when the pseudo-code's sets are
taken literally; ours parses each text once and draws from shrinking pools.

Synthetic but realistic texts: samples of 1,500–3,500 characters (≈ 400–900 tokens of a base
model's reasoning), reflections of 400–1,200 characters; ~30 % of samples correct; reflections
agree with the truth 75 % of the time, 5 % carry no verdict.

Reproduce:
    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/composer_throughput.py
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from typing import Any

from skillfactory.compose import ComposeOptions, compose_problem, dump_record, parse_samples_line
from skillfactory.compose.pair import Pair, reflection_critique, sample_body
from skillfactory.compose.record import ProblemSamples, sft_record
from skillfactory.compose.trace import Trace, format_trace, problem_rng
from skillfactory.parsing import extract_answer, parse_verdict
from skillfactory.prompts import SOLVE_VARIANTS

SAMPLES_PER_PROBLEM = 64
REFLECTIONS_PER_SAMPLE = 4
WORDS = [
    "first",
    "multiply",
    "the",
    "tens",
    "digit",
    "then",
    "add",
    "carry",
    "so",
    "we",
    "get",
    "subtract",
    "check",
    "again",
    "result",
    "number",
    "total",
    "step",
    "remainder",
    "product",
    "sum",
    "equals",
    "therefore",
    "because",
    "compute",
    "value",
]


def _prose(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS) if rng.random() < 0.8 else str(rng.randint(2, 9999))
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


def _reflection(rng: random.Random, correct: bool) -> dict[str, str]:
    critique = _prose(rng, rng.randint(400, 1200))
    roll = rng.random()
    if roll < 0.05:
        return {"text": critique}
    agrees = roll < 0.80
    verdict = "Correct" if correct == agrees else "Incorrect"
    return {"text": f"{critique}\n<verdict>{verdict}</verdict>"}


def synthetic_line(rng: random.Random, index: int) -> str:
    """One composer input line: a problem with 64 samples × 4 reflections."""
    answer = str(rng.randint(1000, 9999))
    samples = []
    for i in range(SAMPLES_PER_PROBLEM):
        correct = rng.random() < 0.3
        stated = answer if correct else str(int(answer) + rng.randint(1, 500))
        text = f"{_prose(rng, rng.randint(1500, 3500))}\n<answer>{stated}</answer>"
        samples.append({
            "text": text,
            "prompt_variant": SOLVE_VARIANTS[i % len(SOLVE_VARIANTS)],
            "correct": correct,
            "reflections": [_reflection(rng, correct) for _ in range(REFLECTIONS_PER_SAMPLE)],
        })  # fmt: skip
    record = {"id": f"bench-{index}", "task": "multiplication-4",
              "question": f"What is {answer}?", "answer": answer, "samples": samples}  # fmt: skip
    return json.dumps(record)


def ours(line: str, number: int, options: ComposeOptions) -> list[str]:
    """The library path, line in → lines out."""
    item = parse_samples_line(line, number)
    return [dump_record(r) for r in compose_problem(item, options)]


def _naive_pairs(item: ProblemSamples, used: list[tuple[int, int]], want: bool) -> list[Any]:
    return [
        (sample.index, j)
        for sample in item.samples
        for j, reflection in enumerate(sample.reflections)
        if sample.correct == want
        and extract_answer(sample.text) is not None
        and parse_verdict(reflection.text) == sample.correct
        and (sample.index, j) not in used
    ]


def _naive_draw(pool: list[Any], n: int, rng: random.Random, taken: set[int]) -> list[Any]:
    drawn = []
    for _ in range(n):
        eligible = [pair for pair in pool if pair[0] not in taken]
        if not eligible:
            break
        pair = rng.choice(eligible)
        pool.remove(pair)
        taken.add(pair[0])
        drawn.append(pair)
    return drawn


def naive(line: str, number: int, options: ComposeOptions) -> list[str]:
    """Baseline: Y+ and Y− recomputed from the texts before every trace."""
    item = parse_samples_line(line, number)
    rng = problem_rng(options.seed, item.problem.id)
    phrases = problem_rng(options.seed, item.problem.id, "phrases")
    used: list[tuple[int, int]] = []
    out: list[str] = []
    while y_plus := _naive_pairs(item, used, True):
        y_minus = _naive_pairs(item, used, False)
        n_plus = min(rng.randint(1, options.max_samples_per_trace), len({p[0] for p in y_plus}))
        n_minus = min(rng.randint(0, n_plus - 1), len({p[0] for p in y_minus}))
        taken: set[int] = set()
        t_plus = _naive_draw(y_plus, n_plus, rng, taken)
        t_minus = _naive_draw(y_minus, n_minus, rng, taken)
        used += t_plus + t_minus
        head = t_minus + t_plus[:-1]
        rng.shuffle(head)
        trace = Trace(tuple(_naive_pair(item, key) for key in [*head, t_plus[-1]]))
        text = format_trace(trace, phrases)
        out.append(dump_record(sft_record(item.problem, trace, text, len(out), options.variant)))
    return out


def _naive_pair(item: ProblemSamples, key: tuple[int, int]) -> Pair:
    sample = item.samples[key[0]]
    body = sample_body(sample.text) or ""
    critique = reflection_critique(sample.reflections[key[1]]) or ""
    return Pair(sample, key[1], body, critique, extract_answer(body) or "")


Composer = Callable[[str, int, ComposeOptions], list[str]]


def measure(composer: Composer, lines: list[str], options: ComposeOptions, repeats: int) -> float:
    """Best-of-`repeats` problems per second over all lines."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for number, line in enumerate(lines, start=1):
            composer(line, number, options)
        best = min(best, time.perf_counter() - start)
    return len(lines) / best


def stage_times(lines: list[str], options: ComposeOptions) -> dict[str, float]:
    """Seconds per problem of each stage of our path: decode+validate, compose, serialize."""
    decode = compose_s = dump = 0.0
    for number, line in enumerate(lines, start=1):
        t0 = time.perf_counter()
        item = parse_samples_line(line, number)
        t1 = time.perf_counter()
        records = compose_problem(item, options)
        t2 = time.perf_counter()
        [dump_record(r) for r in records]
        t3 = time.perf_counter()
        decode, compose_s, dump = decode + t1 - t0, compose_s + t2 - t1, dump + t3 - t2
    n = len(lines)
    return {"decode+validate": decode / n, "filter+Algorithm 1+format": compose_s / n,
            "serialize": dump / n}  # fmt: skip


def main() -> None:
    """Run the benchmark and print a table with the ratio and the reproduce command."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(0)
    lines = [synthetic_line(rng, i) for i in range(args.problems)]
    options = ComposeOptions("skillfactory", seed=0)
    traces_out = sum(len(ours(line, i, options)) for i, line in enumerate(lines, start=1))
    naive_out = sum(len(naive(line, i, options)) for i, line in enumerate(lines, start=1))
    ours_rate = measure(ours, lines, options, args.repeats)
    naive_rate = measure(naive, lines, options, args.repeats)
    mib = sum(map(len, lines)) / args.problems / 2**20
    print(f"composer throughput: {args.problems} problems × {SAMPLES_PER_PROBLEM} samples × "
          f"{REFLECTIONS_PER_SAMPLE} reflections ({mib:.2f} MiB of JSON per problem)")  # fmt: skip
    print(f"{'path':<44}{'problems/s':>12}{'traces':>8}")
    print(f"{'ours (library: parse once, shrinking pools)':<44}{ours_rate:>12.1f}{traces_out:>8}")
    print(f"{'naive (re-parse all texts before each trace)':<44}{naive_rate:>12.1f}{naive_out:>8}")
    print(f"ratio ours/naive: {ours_rate / naive_rate:.2f}x")
    for stage, seconds in stage_times(lines, options).items():
        print(f"  ours, {stage:<28}{seconds * 1e3:>8.2f} ms/problem")
    print("reproduce: OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python "
          "benchmarks/composer_throughput.py")  # fmt: skip


if __name__ == "__main__":
    main()
