"""Issue 15, finding 5, "Graders that freeze the process": every grader returns in bounded time on
any answer and any gold, in any thread; the process stays responsive meanwhile; a stopped check is
a wrong answer, counted in a metric.

A frozen grader holds the GIL in C code, where neither pytest-timeout nor a watchdog thread can
reach it, so each hostile case runs in a child interpreter with a wall-clock limit: a freeze fails
its test instead of wedging the suite.
"""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from skillfactory.serving.reward import RewardMetrics
from skillfactory.tasks import TASK_NAMES, Problem, get_task, gsm8k, math500
from skillfactory.tasks.bounded_check import (
    CALL_TIMEOUT_SECONDS,
    BoundedRunner,
    CheckFailed,
    CheckStopped,
    stopped_checks,
)

CHILD_LIMIT_SECONDS = 90.0
"""Wall-clock limit of a child interpreter; past it the grader froze (today: for ever)."""

BOUNDED_SECONDS = CALL_TIMEOUT_SECONDS + 6.0
"""Most a hostile check may take: the call budget, plus killing the worker on a loaded machine."""

MAX_GAP_SECONDS = 1.5
"""Longest pause of a thread that ticks every 10 ms while a hostile check runs."""

GRADE_IN_A_THREAD = textwrap.dedent(
    """
    import json, sys, threading, time
    from skillfactory.tasks import Problem, get_task
    from skillfactory.tasks.bounded_check import stopped_checks

    case = json.loads(sys.stdin.read())
    task = get_task(case["task"])
    problem = Problem.from_record(case["problem"], task.name)
    for gold, answer in case["warm"]:  # starts the grader's worker processes, if it has any
        task.check(Problem("warm", task.name, "q", gold), answer)
    results = []

    def grade_all():
        for answer in case["answers"]:
            start = time.perf_counter()
            correct = task.check(problem, answer)
            results.append({"answer": answer[:40], "correct": correct,
                            "seconds": time.perf_counter() - start})

    grader = threading.Thread(target=grade_all, daemon=True)
    ticks = [time.perf_counter()]
    grader.start()
    while grader.is_alive():
        time.sleep(0.01)
        ticks.append(time.perf_counter())
    gap = max((b - a for a, b in zip(ticks, ticks[1:])), default=0.0)
    print(json.dumps({"results": results, "max_gap": gap, "stopped": stopped_checks()}))
    """
)

MATH_WARM_UP = [("\\frac{14}{3}", "28/6")]
"""A check that needs math_verify, so the worker is up before the clock starts."""


def run_child(script: str, argument: dict[str, Any]) -> dict[str, Any]:
    """Run `script` in a fresh interpreter; its last stdout line is JSON. A child still running
    after `CHILD_LIMIT_SECONDS` froze: the test fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(argument),
            capture_output=True,
            text=True,
            timeout=CHILD_LIMIT_SECONDS,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the grader froze the process for {CHILD_LIMIT_SECONDS:g} s: {argument}")
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def grade_in_a_thread(
    task: str,
    problem: Problem,
    answers: list[str],
    warm: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Grade hostile answers in a non-main thread of a child while its main thread ticks."""
    case = {
        "task": task,
        "problem": problem.to_record(),
        "answers": answers,
        "warm": warm or [],
    }
    return run_child(GRADE_IN_A_THREAD, case)


def assert_bounded_and_wrong(outcome: dict[str, Any], answers: list[str]) -> None:
    results = outcome["results"]
    assert len(results) == len(answers)
    for result in results:
        assert result["correct"] is False, result
        assert result["seconds"] < BOUNDED_SECONDS, result
    assert outcome["max_gap"] < MAX_GAP_SECONDS, outcome


def math_problem(gold: str) -> Problem:
    return Problem("m", "math500", "q", gold)


# ---------------------------------------------------------------- the finding, case by case


@pytest.mark.timeout(120)
def test_math_verify_power_tower_in_a_thread_returns_in_bounded_time() -> None:
    answers = ["9^{9^{9^{9}}}"]
    outcome = grade_in_a_thread("math500", math_problem("5"), answers, MATH_WARM_UP)
    assert_bounded_and_wrong(outcome, answers)
    assert outcome["stopped"] == {"math500": len(answers)}


@pytest.mark.timeout(120)
def test_math_verify_tiny_power_in_a_thread_returns_in_bounded_time() -> None:
    answers = ["5+10^{-10^{9}}"]
    outcome = grade_in_a_thread("math500", math_problem("5"), answers, MATH_WARM_UP)
    assert_bounded_and_wrong(outcome, answers)


@pytest.mark.timeout(120)
def test_math_verify_hostile_gold_in_a_thread_returns_in_bounded_time() -> None:
    """Reward clients send the gold answer too."""
    answers = ["5"]
    outcome = grade_in_a_thread("math500", math_problem("9^{9^{9^{9}}}"), answers, MATH_WARM_UP)
    assert_bounded_and_wrong(outcome, answers)


@pytest.mark.timeout(120)
def test_gsm8k_huge_exponent_gold_in_a_thread_returns_in_bounded_time() -> None:
    answers = ["5", "1e30000000", "10"]
    outcome = grade_in_a_thread("gsm8k", Problem("g", "gsm8k", "q", "1e30000000"), answers)
    assert_bounded_and_wrong(outcome, answers)


HOSTILE_ANSWERS = [
    "9^{9^{9^{9}}}",
    "9**9**9**9",
    "1e30000000",
    "(" * 20_000 + "1" + ")" * 20_000,
    "9" * 100_000,
    "9" * 3000 + " * " + "9" * 3000,
    "\\frac{1}{" * 400 + "2" + "}" * 400,
    "\x00\ud7ff\u202e٣",
]


ONE_TASK_PER_FAMILY = sorted({name.rstrip("0123456789-"): name for name in TASK_NAMES}.values())
"""countdown-6, countdown-subset-6, multiplication-5, letter-countdown-5, acronym-5, csqa, gsm8k,
math500."""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("task", ONE_TASK_PER_FAMILY)
def test_every_grader_returns_in_bounded_time_on_hostile_answers(task: str) -> None:
    """The `Task.check` contract, for one task of each family; a numeric gold where the task has
    one, since the hostile numbers blow up when compared with a number."""
    problems = get_task(task).problems(50)
    problem = next((p for p in problems if p.answer.isdigit()), problems[0])
    warm = MATH_WARM_UP if task == "math500" else None
    outcome = grade_in_a_thread(task, problem, HOSTILE_ANSWERS, warm)
    assert_bounded_and_wrong(outcome, HOSTILE_ANSWERS)


REWARD_SERVICE_UNDER_A_HOSTILE_ANSWER = textwrap.dedent(
    """
    import json, time
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from skillfactory.serving.reward import SERVICE_NAME, score_request, setup_reward_server
    from skillfactory.serving.server import ServingConfig
    from skillfactory.tasks import Problem
    from skillfactory.v1 import reward_pb2_grpc
    from skillfactory.wire.messages import problem_to_proto

    server = setup_reward_server(ServingConfig(grace_s=1.0, linger_s=0.0, metrics_port=None))
    server.start()
    channel = grpc.insecure_channel(server.address)
    health = health_pb2_grpc.HealthStub(channel)
    reward = reward_pb2_grpc.RewardServiceStub(channel)
    problem = problem_to_proto(Problem("m", "math500", "q", "\\\\frac{14}{3}"))
    reward.Score(score_request([(problem, ["<answer>28/6</answer>"])]), timeout=60)  # warm
    hostile = ["<answer>9^{9^{9^{9}}}</answer>", "<answer>28/6</answer>"]
    start = time.perf_counter()
    pending = reward.Score.future(score_request([(problem, hostile)]), timeout=60)
    latencies = []
    while not pending.done():
        asked = time.perf_counter()
        answer = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        latencies.append(time.perf_counter() - asked)
        time.sleep(0.1)
    rewards = [reward.correct for reward in pending.result().rewards]
    seconds = time.perf_counter() - start
    timeouts = server.metrics.registry.get_sample_value(
        "skillfactory_reward_grader_timeouts_total", {"task": "math500"}
    )
    server.stop(grace_s=0)
    print(json.dumps({"rewards": rewards, "seconds": seconds, "health": latencies,
                      "timeouts": timeouts}))
    """
)


@pytest.mark.timeout(120)
def test_reward_service_health_answers_while_a_hostile_answer_is_graded() -> None:
    outcome = run_child(REWARD_SERVICE_UNDER_A_HOSTILE_ANSWER, {})
    assert outcome["rewards"] == [False, True]
    assert outcome["seconds"] < BOUNDED_SECONDS
    assert len(outcome["health"]) >= 3 and max(outcome["health"]) < 1.0, outcome
    assert outcome["timeouts"] == 1


# ---------------------------------------------------------------- the in-process caps


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", 12),
        ("-3", -3),
        (" 7 ", 7),
        ("2.50", Fraction(5, 2)),
        ("3/4", Fraction(3, 4)),
        ("1.5e3", 1500),
        ("1e100", 10**100),
        ("1e101", None),
        ("1e-30000000", None),
        ("9" * (gsm8k.MAX_NUMBER_CHARS + 1), None),
        ("1/0", None),
        ("1_000", None),
    ],
)
def test_gsm8k_exact_number_reads_with_hard_caps(text: str, value: object) -> None:
    assert gsm8k.exact_number(text) == value


@pytest.mark.parametrize(
    ("gold", "answer", "correct"),
    [("5", "7", False), ("5", "05", True), ("-0", "0", True), ("12", "\\boxed{13}", False)],
)
def test_math500_integers_are_decided_in_process(
    gold: str, answer: str, correct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_worker(gold: str, answer: str) -> bool:
        raise AssertionError("sent to a worker")

    monkeypatch.setattr(math500, "equivalent_bounded", no_worker)
    assert math500.Math500Task().check(math_problem(gold), answer) is correct


@pytest.mark.parametrize(
    ("gold", "answer"),
    [("5", "7"), ("5", "05"), ("-0", "0"), ("12", "$13$"), ("100", "\\boxed{-100}"), ("3", "3.")],
)
def test_math500_integer_verdicts_agree_with_math_verify(gold: str, answer: str) -> None:
    """The in-process verdict on integers is math_verify's (run here, in the main thread)."""
    assert math500.plain_integer(gold) is not None and math500.plain_integer(answer) is not None
    verdict = math500.Math500Task().check(math_problem(gold), answer)
    assert verdict is math500.is_equivalent(gold, answer)


# ---------------------------------------------------------------- the worker pool


@pytest.fixture
def runner() -> Iterator[BoundedRunner]:
    runner = BoundedRunner("test-runner", timeout_s=1.0, max_workers=1)
    yield runner
    runner.close()


@pytest.mark.timeout(60)
def test_a_stuck_worker_is_killed_replaced_and_counted(runner: BoundedRunner) -> None:
    assert runner.call(operator.add, 1, 2) == 3
    before = stopped_checks().get("test-runner", 0)
    ticks: list[float] = []
    done = threading.Event()

    def tick() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.01)

    ticker = threading.Thread(target=tick)
    ticker.start()
    start = time.perf_counter()
    with pytest.raises(CheckStopped):
        runner.call(pow, 9, 9**9)  # holds the worker's GIL for minutes
    elapsed = time.perf_counter() - start
    done.set()
    ticker.join()
    assert elapsed < 1.0 + 5.0
    assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < MAX_GAP_SECONDS
    assert stopped_checks().get("test-runner", 0) == before + 1
    assert runner.call(operator.mul, 6, 7) == 42  # a fresh worker


@pytest.mark.timeout(60)
def test_a_raising_function_is_reported_and_the_worker_kept(runner: BoundedRunner) -> None:
    with pytest.raises(CheckFailed, match="ValueError"):
        runner.call(int, "not a number")
    with pytest.raises(CheckFailed, match="MemoryError"):
        runner.call(bytearray, 4 << 30)  # past the worker's address-space cap
    assert runner.call(operator.add, 2, 2) == 4


@pytest.mark.timeout(60)
def test_concurrent_callers_share_the_workers() -> None:
    runner = BoundedRunner("test-shared", timeout_s=5.0, max_workers=2)
    results: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        value = runner.call(operator.mul, n, n)
        with lock:
            results.append(value)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [n * n for n in range(8)]
    runner.close()


AFTER_FORK = textwrap.dedent(
    """
    import operator, os, sys
    from skillfactory.tasks.bounded_check import BoundedRunner

    runner = BoundedRunner("fork", timeout_s=5.0)
    assert runner.call(operator.add, 1, 1) == 2
    child = os.fork()
    if child == 0:  # the parent's workers are not ours: start our own
        os._exit(0 if runner.call(operator.add, 2, 2) == 4 else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert runner.call(operator.add, 3, 3) == 6
    print("{}")
    """
)


@pytest.mark.timeout(120)
def test_a_forked_child_starts_its_own_workers() -> None:
    run_child(AFTER_FORK, {})


def test_reward_metrics_export_stopped_checks() -> None:
    registry = CollectorRegistry()
    RewardMetrics(registry)
    name, labels = "skillfactory_reward_grader_timeouts_total", {"task": "test-metric"}
    before = registry.get_sample_value(name, labels) or 0.0
    runner = BoundedRunner("test-metric", timeout_s=0.5, max_workers=1)
    with pytest.raises(CheckStopped):
        runner.call(time.sleep, 30)
    runner.close()
    assert registry.get_sample_value(name, labels) == before + 1
