"""Load test of the local cluster: concurrent clients against every service while a run trains.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/load_test.py [--clients 50] [--seconds 120] \
        [--warmup 15] [--steps N] [--token-delay-ms 100] [--json]

Starts the local cluster the way `skillfactory up` does (`skillfactory.cluster.local.up`: a
supervisor with a real `redis-server` and the reward, composer, learner and two rollout services
as processes on loopback, free ports, a bearer token). The rollout services run the transformers
engine on the tiny model trained to answer with a letter (`tests/support/letter_model.py`) at a
simulated speed (`--simulated-token-delay-ms 40`: SIMULATION, every engine call lasts at least
40 ms per decode step), as `tests/integration/cluster/test_local_cluster.py` does.

1. A GRPO run on CommonsenseQA is submitted through the learner API; the load starts once its
   first step is trained, so a run is in progress throughout.
2. `--clients` threads, each with its own channel, call in a closed loop (no think time), the
   client kinds in turn: `Score` on the reward service (4 csqa answers), `Generate` on a rollout
   service (1 prompt × 2 completions × 8 tokens), `WatchRun` on the learner (from sequence 0 or
   the last one seen, for 3 s per call: the client's deadline ends it; a refused stream waits
   0.5 s) and `GetRun` on the learner, for `--seconds`.
3. Meanwhile a separate process (so the load generator's GIL does not slow it) calls the gRPC
   health check (`grpc.health.v1.Health/Check`, no token, as a probe would) of every service
   every 0.5 s, one thread per service, 5 s deadline, and samples each service process's RSS
   (`/proc/PID/status` VmRSS, via psutil) every second.
4. When the load ends, the run is waited for, then checked.

Pass criteria (`passed` in the result):
- health: every check answered SERVING, the slowest in under 1 s;
- memory: each service's RSS at the end (median of the last 5 samples) is less than 10 % above
  its RSS after the warm-up (median of the 5 samples after `--warmup` seconds of load);
- calls: every unary call answered OK; `WatchRun` answered OK, RESOURCE_EXHAUSTED (more streams
  than the learner's stream limit) or DEADLINE_EXCEEDED (the client's 3-s window) only;
- nothing lost from the run (`run_checks`): it was still running when the load ended and then
  SUCCEEDED at its last policy version; its `grpo/steps.jsonl` has versions 1..steps and every
  trained group once (steps × prompts_per_step distinct prompts); the learner's event log read
  from 0 is gapless (sequences 1..N) with one `grpo` metrics event per step; every window a
  watcher read during the load was gapless and agreed with that log; no `GetRun` saw FAILED or
  CANCELLED; no service process restarted; no dead-lettered entry and no failed sampler batch
  (the rollouts' `skillfactory_queue_dead_letters_total`, `skillfactory_sampler_task_failures_total`).

The last line with `--json` is the whole result as JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HEALTH_LIMIT_S = 1.0
MEMORY_LIMIT = 0.10
WATCH_WINDOW_S = 3.0
EXPECTED = {
    "Score": {"OK"},
    "Generate": {"OK"},
    "GetRun": {"OK"},
    "WatchRun": {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"},
}
KINDS = ("Score", "Generate", "WatchRun", "GetRun")
TOKEN_DELAY_MS = 100.0
"""SIMULATION: the rollout engines' least time per decode step (paces the run)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--warmup", type=float, default=15.0, help="load seconds before RSS base")
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps of the run")
    parser.add_argument("--token-delay-ms", type=float, default=TOKEN_DELAY_MS)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


# --- probe process: health latency and RSS ------------------------------------------------


def probe_main(
    addresses: dict[str, str],
    pids: dict[str, int],
    stop: Any,
    out: str,
    period_s: float = 0.5,
) -> None:
    """Health checks of every service every `period_s` and RSS every second until `stop` is
    set; writes `{"health": {name: [[t, seconds, status], ...]}, "rss": {name: [[t, bytes]]}}`."""
    import grpc
    import psutil
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health: dict[str, list[list[Any]]] = {name: [] for name in addresses}
    rss: dict[str, list[list[float]]] = {name: [] for name in pids}

    def check(name: str, address: str) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not stop.is_set():
                started = time.time()
                try:
                    answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
                except grpc.RpcError as error:
                    status = error.code().name
                health[name].append([started, time.time() - started, status])
                stop.wait(max(0.0, period_s - (time.time() - started)))

    def sample() -> None:
        processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        while not stop.is_set():
            now = time.time()
            for name, process in processes.items():
                try:
                    rss[name].append([now, float(process.memory_info().rss)])
                except psutil.Error:
                    rss[name].append([now, float("nan")])
            stop.wait(1.0)

    threads = [threading.Thread(target=check, args=item, daemon=True) for item in addresses.items()]
    threads.append(threading.Thread(target=sample, daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    Path(out).write_text(json.dumps({"health": health, "rss": rss}))


# --- the cluster and the run --------------------------------------------------------------


def start_cluster(root: Path, token_delay_ms: float) -> tuple[Any, Path]:
    """A local cluster as `skillfactory up` starts it, with the letter model preloaded by the
    rollout services; returns its state and the model."""
    from skillfactory.cluster.local import ClusterConfig, up
    from skillfactory.models.tiny import build_tiny_model

    sys.path.insert(0, str(REPO / "tests"))
    from support.letter_model import answer_letter_model

    model = answer_letter_model(build_tiny_model(root / "tiny"), root / "letter-model")
    config = ClusterConfig(
        dir=root / "cluster",
        samplers=2,
        claim_idle_ms=3000,
        model=str(model),
        simulated_token_delay_ms=token_delay_ms,
        engine="transformers",
        gpus=0,
        data_root=str(root),
    )
    return up(config), model


def run_spec(model: Path, out: Path, steps: int) -> dict[str, Any]:
    """A GRPO-only run on CommonsenseQA (as the cluster tests submit)."""
    return {
        "name": "load",
        "model": str(model),
        "output_dir": str(out),
        "stages": ["grpo"],
        "engine": {"type": "transformers", "max_batch_size": 64},
        "grpo": {
            "task": "csqa",
            "num_problems": max(40, 4 * steps),
            "steps": steps,
            "group_size": 4,
            "prompts_per_step": 2,
            "mini_batch_size": 2,
            "max_staleness": 2,
            "learning_rate": 1e-3,
            "max_response_length": 8,
            "save_steps": 5,
        },
    }


class Api:
    """The learner API with the cluster's token."""

    def __init__(self, state: Any) -> None:
        import grpc

        from skillfactory.serving.auth import bearer_metadata
        from skillfactory.v1 import learner_pb2_grpc

        self.auth = bearer_metadata(Path(state.token_file).read_text().strip())
        self.channel = grpc.insecure_channel(state.learner)
        self.stub = learner_pb2_grpc.LearnerStub(self.channel)

    def submit(self, spec: dict[str, Any]) -> str:
        from skillfactory.contracts.runspec_proto import run_spec_to_proto
        from skillfactory.runspec import parse_run_spec
        from skillfactory.v1 import learner_pb2

        request = learner_pb2.SubmitRunRequest(spec=run_spec_to_proto(parse_run_spec(spec)))
        return str(self.stub.SubmitRun(request, metadata=self.auth, timeout=30).run_id)

    def status(self, run_id: str) -> Any:
        from skillfactory.v1 import learner_pb2

        request = learner_pb2.GetRunRequest(run_id=run_id)
        return self.stub.GetRun(request, metadata=self.auth, timeout=30)

    def events(self, run_id: str, timeout_s: float = 900) -> list[Any]:
        """Every event of a finished run, from sequence 0."""
        from skillfactory.v1 import learner_pb2

        request = learner_pb2.WatchRunRequest(run_id=run_id, after_sequence=0)
        return list(self.stub.WatchRun(request, metadata=self.auth, timeout=timeout_s))

    def wait_for_step(self, run_id: str, step: int, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status.policy_version >= step:
                return
            if status.state in TERMINAL():
                raise RuntimeError(f"the run ended before step {step}: {status.message}")
            time.sleep(0.5)
        raise RuntimeError(f"the run did not reach step {step} in {timeout_s:.0f} s")

    def wait_until_done(self, run_id: str, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status.state in TERMINAL():
                return status
            time.sleep(0.5)
        raise RuntimeError(f"the run did not finish in {timeout_s:.0f} s")


def TERMINAL() -> set[int]:  # noqa: N802 (a constant, imported late)
    from skillfactory.v1 import run_pb2

    return {run_pb2.RUN_STATE_SUCCEEDED, run_pb2.RUN_STATE_FAILED, run_pb2.RUN_STATE_CANCELLED}


# --- the clients --------------------------------------------------------------------------


class Recorder:
    """Calls per RPC by status code, OK latencies, and what watchers and GetRun saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.codes: dict[str, Counter[str]] = defaultdict(Counter)
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.windows: list[list[tuple[int, str, str, int]]] = []
        """Each watch window's events: (sequence, stage, kind, metrics step)."""
        self.gaps: list[str] = []
        self.states: Counter[str] = Counter()
        self.errors: dict[str, str] = {}
        """One message per unexpected (rpc, code)."""

    def call(self, rpc: str, code: str, seconds: float, message: str = "") -> None:
        with self.lock:
            self.codes[rpc][code] += 1
            if code == "OK":
                self.latency[rpc].append(seconds)
            elif code not in EXPECTED[rpc]:
                self.errors.setdefault(f"{rpc} {code}", message[:300])


def client(
    kind: str,
    index: int,
    state: Any,
    run_id: str,
    recorder: Recorder,
    stop: threading.Event,
) -> None:
    """One client: calls `kind` in a closed loop until `stop`."""
    import grpc

    from skillfactory.serving.auth import bearer_metadata
    from skillfactory.v1 import (
        data_pb2,
        learner_pb2,
        learner_pb2_grpc,
        reward_pb2,
        reward_pb2_grpc,
        rollout_pb2,
        rollout_pb2_grpc,
        run_pb2,
    )

    auth = bearer_metadata(Path(state.token_file).read_text().strip())
    rollouts = sorted(n for n in state.processes if n.startswith("rollout-"))
    address = {
        "Score": state.processes["reward"].address,
        "Generate": state.processes[rollouts[index % len(rollouts)]].address if rollouts else "",
        "WatchRun": state.learner,
        "GetRun": state.learner,
    }[kind]
    rng = random.Random(index)
    problem = data_pb2.Problem(
        id="load-q", task="csqa", question="Which letter? (A) yes (B) no", answer="B"
    )
    after = 0
    with grpc.insecure_channel(address) as channel:
        reward = reward_pb2_grpc.RewardServiceStub(channel)
        rollout = rollout_pb2_grpc.RolloutStub(channel)
        learner = learner_pb2_grpc.LearnerStub(channel)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                if kind == "Score":
                    items = [
                        reward_pb2.ScoreItem(problem=problem, response=f"<answer>{letter}</answer>")
                        for letter in rng.sample("ABCDE", 4)
                    ]
                    reward.Score(reward_pb2.ScoreRequest(items=items), metadata=auth, timeout=10)
                elif kind == "Generate":
                    request = rollout_pb2.GenerateRequest(
                        prompts=[f"Which letter? ({rng.randrange(100)})"],
                        n=2,
                        apply_chat_template=True,
                    )
                    request.sampling.max_tokens = 8
                    rollout.Generate(request, metadata=auth, timeout=30)
                elif kind == "GetRun":
                    status = learner.GetRun(
                        learner_pb2.GetRunRequest(run_id=run_id), metadata=auth, timeout=10
                    )
                    with recorder.lock:
                        recorder.states[run_pb2.RunState.Name(status.state)] += 1
                else:
                    after = watch(learner, run_id, after, auth, recorder, rng)
                    continue
                recorder.call(kind, "OK", time.perf_counter() - started)
            except grpc.RpcError as error:
                recorder.call(kind, error.code().name, 0.0, str(error.details()))


def watch(
    learner: Any,
    run_id: str,
    after: int,
    auth: Any,
    recorder: Recorder,
    rng: random.Random,
) -> int:
    """One WatchRun window of `WATCH_WINDOW_S` from `after` (or from 0, one time in three);
    checks that its sequences follow each other; returns the last sequence seen."""
    import grpc

    from skillfactory.v1 import learner_pb2

    start = 0 if rng.random() < 1 / 3 else after
    started = time.perf_counter()
    seen: list[tuple[int, str, str, int]] = []
    request = learner_pb2.WatchRunRequest(run_id=run_id, after_sequence=start)
    code, message = "OK", ""
    try:
        for event in learner.WatchRun(request, metadata=auth, timeout=WATCH_WINDOW_S):
            kind = event.WhichOneof("kind") or ""
            seen.append((event.sequence, event.stage, kind, event.metrics.step))
    except grpc.RpcError as error:
        code, message = error.code().name, str(error.details())
    sequences = [s[0] for s in seen]
    expected = list(range(start + 1, start + 1 + len(seen)))
    with recorder.lock:
        if seen:
            recorder.windows.append(seen)
        if sequences != expected:
            recorder.gaps.append(f"after {start}: {sequences[:5]}…{sequences[-5:]}")
    recorder.call("WatchRun", code, time.perf_counter() - started, message)
    if code == "RESOURCE_EXHAUSTED":
        time.sleep(0.5)  # a refused client backs off
    return sequences[-1] if sequences else start


# --- the test -----------------------------------------------------------------------------


def scrape_total(state: Any, prefix: str, series: str) -> float:
    """Sum of every sample of `series` (any labels) over the processes named `prefix…`."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for name, url in state.metrics_urls().items():
        if not name.startswith(prefix):
            continue
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        for family in text_string_to_metric_families(text):
            total += sum(s.value for s in family.samples if s.name == series)
    return total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_checks(
    api: Api,
    state_at_end: Any,
    run_id: str,
    out: Path,
    steps: int,
    running_at_end: bool,
    recorder: Recorder,
    final: Any,
) -> dict[str, Any]:
    """What tells that nothing was lost from the run (see the module notes)."""
    from skillfactory.v1 import run_pb2

    checks: dict[str, Any] = {}
    checks["running_when_load_ended"] = running_at_end
    checks["final_state"] = run_pb2.RunState.Name(final.state)
    checks["succeeded"] = final.state == run_pb2.RUN_STATE_SUCCEEDED
    checks["policy_version"] = int(final.policy_version)
    checks["final_version_is_steps"] = final.policy_version == steps

    (folder,) = out.glob("*/load")
    lines = (folder / "grpo" / "steps.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    trained = [group for record in records for group in record["group_ids"]]
    checks["step_records"] = len(records)
    checks["every_step_recorded_once"] = [r["version"] for r in records] == list(
        range(1, steps + 1)
    )
    checks["groups_trained"] = len(trained)
    checks["every_group_trained_once"] = len(trained) == len(set(trained)) == steps * 2

    events = api.events(run_id)
    log = [(e.sequence, e.stage, e.WhichOneof("kind") or "", e.metrics.step) for e in events]
    by_sequence = {entry[0]: entry for entry in log}
    checks["events"] = len(log)
    checks["event_log_gapless"] = [e[0] for e in log] == list(range(1, len(log) + 1))
    step_events = [e[3] for e in log if e[1] == "grpo" and e[2] == "metrics"]
    checks["one_metrics_event_per_step"] = sorted(step_events) == list(range(1, steps + 1))
    checks["watch_windows"] = len(recorder.windows)
    checks["watch_windows_gapless"] = not recorder.gaps
    checks["watch_windows_agree_with_log"] = all(
        by_sequence.get(entry[0]) == entry for window in recorder.windows for entry in window
    )
    bad_states = {"RUN_STATE_FAILED", "RUN_STATE_CANCELLED"} & set(recorder.states)
    checks["getrun_states"] = dict(recorder.states)
    checks["getrun_never_failed"] = not bad_states
    restarts = {name: p.restarts for name, p in state_at_end.processes.items()}
    checks["restarts"] = restarts
    checks["no_restart"] = not any(restarts.values())
    dead = scrape_total(state_at_end, "rollout", "skillfactory_queue_dead_letters_total")
    failures = scrape_total(state_at_end, "rollout", "skillfactory_sampler_task_failures_total")
    pushed = scrape_total(state_at_end, "rollout", "skillfactory_sampler_groups_pushed_total")
    duplicates = scrape_total(
        state_at_end, "learner", "skillfactory_learner_duplicate_groups_total"
    )
    checks["dead_letters"] = dead
    checks["sampler_task_failures"] = failures
    checks["groups_pushed"] = pushed
    checks["duplicate_groups"] = duplicates
    checks["no_dead_letter_or_failed_batch"] = dead == 0 and failures == 0
    checks["passed"] = all(
        checks[key]
        for key in (
            "running_when_load_ended",
            "succeeded",
            "final_version_is_steps",
            "every_step_recorded_once",
            "every_group_trained_once",
            "event_log_gapless",
            "one_metrics_event_per_step",
            "watch_windows_gapless",
            "watch_windows_agree_with_log",
            "getrun_never_failed",
            "no_restart",
            "no_dead_letter_or_failed_batch",
        )
    )
    return checks


def default_steps(seconds: float) -> int:
    """Steps that outlast the load: the run trains about 0.6 steps/s under load and 1 step/s
    without at `TOKEN_DELAY_MS` on two cores, and starts the load at step 1."""
    return max(20, round(seconds)) + 5


def run_load(
    clients: int = 50,
    seconds: float = 120.0,
    warmup: float = 15.0,
    steps: int | None = None,
    root: Path | None = None,
    token_delay_ms: float = TOKEN_DELAY_MS,
) -> dict[str, Any]:
    """Start a cluster in `root` (a temporary folder if None), load it, stop it; the result."""
    steps = steps or default_steps(seconds)
    if root is None:
        with tempfile.TemporaryDirectory(prefix="load-test-") as folder:
            return run_load(clients, seconds, warmup, steps, Path(folder), token_delay_ms)
    from skillfactory.cluster.local import down

    started = time.monotonic()
    state, model = start_cluster(root, token_delay_ms)
    up_s = time.monotonic() - started
    try:
        result = load(state, model, root, clients, seconds, warmup, steps)
        result["token_delay_ms"] = token_delay_ms
        result["timings"] = {"model_and_cluster_up_s": round(up_s, 1), **result["timings"]}
        return result
    finally:
        down(root / "cluster")


def load(
    state: Any,
    model: Path,
    root: Path,
    clients: int,
    seconds: float,
    warmup: float,
    steps: int,
) -> dict[str, Any]:
    from skillfactory.cluster.local import ClusterState

    services = {name: p for name, p in state.processes.items() if name != "redis"}
    context = multiprocessing.get_context("spawn")
    probe_stop = context.Event()
    probe_out = root / "probe.json"
    pids = {name: p.pid for name, p in state.processes.items()}
    probe = context.Process(
        target=probe_main,
        args=({n: p.address for n, p in services.items()}, pids, probe_stop, str(probe_out)),
        daemon=True,  # gone with this process, whatever stops it
    )
    probe.start()
    api = Api(state)
    out = root / "runs"
    run_id = api.submit(run_spec(model, out, steps))
    submitted = time.monotonic()
    api.wait_for_step(run_id, 1)
    first_step = time.monotonic()

    recorder = Recorder()
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=client,
            args=(KINDS[i % len(KINDS)], i // len(KINDS), state, run_id, recorder, stop),
            daemon=True,
        )
        for i in range(clients)
    ]
    load_start = time.time()
    for thread in threads:
        thread.start()
    version_at_start = int(api.status(run_id).policy_version)
    stop.wait(seconds)
    stop.set()
    load_end = time.time()
    for thread in threads:
        thread.join(60)
    status_at_end = api.status(run_id)
    running_at_end = status_at_end.state not in TERMINAL()
    time.sleep(1.0)
    probe_stop.set()
    probe.join(60)
    final = api.wait_until_done(run_id, timeout_s=900)
    done = time.monotonic()

    measured = json.loads(probe_out.read_text())
    table: dict[str, Any] = {}
    passed_health, passed_memory = True, True
    for name in services:
        checks = [h for h in measured["health"][name] if load_start <= h[0] <= load_end]
        latencies = [h[1] for h in checks]
        statuses = Counter(h[2] for h in checks)
        rss = [r for r in measured["rss"][name] if r[1] == r[1]]
        base = [r[1] for r in rss if r[0] >= load_start + warmup][:5]
        before = [r[1] for r in rss if r[0] < load_start][-1:]
        end = [r[1] for r in rss if r[0] <= load_end][-5:]
        base_mib = statistics.median(base) / 2**20 if base else float("nan")
        end_mib = statistics.median(end) / 2**20 if end else float("nan")
        growth = (end_mib - base_mib) / base_mib if base else float("nan")
        healthy = bool(latencies) and max(latencies) < HEALTH_LIMIT_S
        healthy = healthy and set(statuses) == {"SERVING"}
        passed_health &= healthy
        passed_memory &= growth < MEMORY_LIMIT
        table[name] = {
            "health_checks": len(checks),
            "health_statuses": dict(statuses),
            "health_p50_ms": 1000 * percentile(latencies, 0.5),
            "health_p99_ms": 1000 * percentile(latencies, 0.99),
            "health_max_ms": 1000 * max(latencies, default=float("nan")),
            "rss_before_mib": before[0] / 2**20 if before else float("nan"),
            "rss_base_mib": base_mib,
            "rss_end_mib": end_mib,
            "rss_growth_pct": 100 * growth,
        }
    calls: dict[str, dict[str, Any]] = {}
    unexpected = {}
    for rpc in KINDS:
        codes = dict(recorder.codes[rpc])
        calls[rpc] = {
            "calls": sum(codes.values()),
            "per_s": sum(codes.values()) / (load_end - load_start),
            "codes": codes,
            "ok_p50_ms": 1000 * percentile(recorder.latency[rpc], 0.5),
            "ok_p99_ms": 1000 * percentile(recorder.latency[rpc], 0.99),
        }
        unexpected.update({k: v for k, v in recorder.errors.items() if k.startswith(rpc)})
    run = run_checks(
        api, ClusterState.load(Path(state.dir)), run_id, out, steps, running_at_end, recorder, final
    )
    run["version_at_load_start"] = version_at_start
    run["version_at_load_end"] = int(status_at_end.policy_version)
    passed_calls = not unexpected and all(calls[rpc]["calls"] > 0 for rpc in KINDS)
    timings = {
        "to_first_step_s": first_step - submitted,
        "load_s": load_end - load_start,
        "to_run_end_s": done - first_step - (load_end - load_start),
        "checks_s": time.monotonic() - done,
    }
    return {
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "clients": clients,
        "seconds": round(load_end - load_start, 1),
        "warmup": warmup,
        "steps": steps,
        "services": table,
        "calls": calls,
        "unexpected": unexpected,
        "run": run,
        "health_ok": passed_health,
        "memory_ok": passed_memory,
        "calls_ok": passed_calls,
        "passed": passed_health and passed_memory and passed_calls and run["passed"],
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"{result['clients']} clients for {result['seconds']:.0f} s (RSS base after "
        f"{result['warmup']:g} s); SIMULATION: engine calls last ≥ {result['token_delay_ms']:g} ms "
        f"per decode step; {os.cpu_count()} CPU cores",
        "",
        "| service | health checks | p50 ms | p99 ms | max ms | RSS base MiB | RSS end MiB | growth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["services"].items():
        lines.append(
            f"| {name} | {row['health_checks']} | {row['health_p50_ms']:.1f} | "
            f"{row['health_p99_ms']:.1f} | {row['health_max_ms']:.1f} | {row['rss_base_mib']:.0f} | "
            f"{row['rss_end_mib']:.0f} | {row['rss_growth_pct']:+.1f} % |"
        )
    lines += ["", "| RPC | calls | calls/s | OK p50 ms | OK p99 ms | status codes |"]
    lines.append("|---|---:|---:|---:|---:|---|")
    for rpc, row in result["calls"].items():
        codes = ", ".join(f"{code} {count}" for code, count in sorted(row["codes"].items()))
        lines.append(
            f"| {rpc} | {row['calls']} | {row['per_s']:.1f} | {row['ok_p50_ms']:.0f} | "
            f"{row['ok_p99_ms']:.0f} | {codes} |"
        )
    run = result["run"]
    lines += [
        "",
        f"run: {run['final_state']} at version {run['policy_version']} of {result['steps']} "
        f"(version {run['version_at_load_start']} when the load started, "
        f"{run['version_at_load_end']} when it ended); {run['step_records']} step records, "
        f"{run['groups_trained']} groups trained, {run['events']} events, "
        f"{run['watch_windows']} watch windows; dead letters {run['dead_letters']:.0f}, "
        f"failed sampler batches {run['sampler_task_failures']:.0f}, restarts "
        f"{sum(run['restarts'].values())}",
        f"health < 1 s: {result['health_ok']}; memory growth < 10 %: {result['memory_ok']}; "
        f"calls as expected: {result['calls_ok']} {result['unexpected'] or ''}; nothing lost: "
        f"{run['passed']}",
        f"timings (s): {result['timings']}",
        f"passed: {result['passed']}",
    ]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    result = run_load(
        args.clients, args.seconds, args.warmup, args.steps, token_delay_ms=args.token_delay_ms
    )
    print(report(result))
    if args.json:
        print(json.dumps(result))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
