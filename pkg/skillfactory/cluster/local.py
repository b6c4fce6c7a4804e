"""A local cluster: Redis and every service as processes on loopback, kept alive by a supervisor.

`skillfactory up` starts the supervisor (`python -m skillfactory.cluster.supervise DIR`) in its
own session and waits until it reports the cluster ready; `skillfactory down` stops it. The
supervisor, like a kubelet for one machine:

- picks free loopback ports once (a restarted process gets the same address);
- writes a bearer token and a Redis password to files of mode 0600 in the cluster folder, and
  hands them to the services through the environment (`SKILLFACTORY_TOKEN`,
  `SKILLFACTORY_REDIS_PASSWORD`), never on a command line;
- starts Redis (the OS package's `redis-server`, AOF on, data in `DIR/redis`), then the reward,
  composer and learner services, then `samplers` rollout services, each logging to
  `DIR/logs/<name>.log`, and waits for each one's ready line;
- restarts any process that exits while the cluster is up (counted in `restarts`);
- on SIGTERM stops the rollouts, the learner, the composer and the reward service gracefully
  (SIGTERM, then SIGKILL after the grace period), then Redis.

The state lives in `DIR/cluster.json` (`ClusterState`): addresses, metrics URLs, pids, restarts.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skillfactory.files import write_json_atomically
from skillfactory.models.registry import cache_root
from skillfactory.queue.redis_server import RedisServer, free_port
from skillfactory.rollout.scaling import Autoscaler, ScalingPolicy, backlog

STATE_FILE = "cluster.json"
SUPERVISOR_PID = "supervisor.pid"
TOKEN_FILE = "token"
REDIS_PASSWORD_FILE = "redis-password"
DEFAULT_DIR = Path(".skillfactory") / "cluster"
DIR_ENV = "SKILLFACTORY_CLUSTER_DIR"
CONFIG_FILE = "config.json"
"""What `skillfactory up` asked for, read by the supervisor process."""


def cluster_dir(given: Path | None) -> Path:
    """The cluster folder: `given`, else `$SKILLFACTORY_CLUSTER_DIR`, else `.skillfactory/cluster`."""
    return (given or Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)).resolve()


class ClusterError(RuntimeError):
    """The local cluster could not start, or is not running."""


@dataclass
class ClusterConfig:
    """What `skillfactory up` starts."""

    dir: Path
    """Cluster folder: state, logs, Redis data, learner state, weight stores."""
    samplers: int = 2
    """Rollout services, each with one sampler worker."""
    claim_idle_ms: int = 60_000
    """A silent sampler's tasks are reclaimed after this long."""
    threads: int = 1
    """OMP/torch threads of each service process."""
    model: str = ""
    """Model every rollout service loads at start ('' = the first rollout task's)."""
    grace_s: float = 30.0
    """Seconds a service gets to stop before SIGKILL."""
    simulated_token_delay_ms: float = 0.0
    """SIMULATION (benchmarks, fault tests): rollout engine calls last at least this many ms
    per decode step."""
    learner_procs: int = 1
    """Processes of the learner (torchrun on this machine: SFT and GRPO train on all of them)."""
    engine: str = "transformers"
    """Engine of the rollout services: transformers, vllm, or simulated (SIMULATION: completions
    a function of prompt and seed, no model run)."""
    gpus: int | None = None
    """GPUs of this machine to spread the processes over (None: as many as `nvidia-smi -L` lists;
    0: none, every process on the CPU)."""
    data_root: str = ""
    """Folder run specs' output_dir must lie inside (the learner's --data-root); '' means the
    folder `skillfactory up` ran in."""
    max_samplers: int = 0
    """Above `samplers`: the supervisor scales the rollout services between `samplers` and this
    with the backlog (`skillfactory.rollout.scaling`); 0 keeps `samplers` fixed."""
    tasks_per_replica: int = 16
    """Backlog one rollout service is expected to absorb (autoscaling)."""
    scale_up_cooldown_s: float = 10.0
    """Seconds after a change before the fleet may grow again (autoscaling)."""
    scale_down_cooldown_s: float = 60.0
    """Seconds of lower need before the fleet shrinks (autoscaling)."""

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "dir": str(self.dir)})

    @classmethod
    def from_json(cls, text: str) -> ClusterConfig:
        data = json.loads(text)
        return cls(**{**data, "dir": Path(data["dir"])})


def visible_gpus() -> int:
    """GPUs `nvidia-smi -L` lists here (0 without a driver)."""
    try:
        listed = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))


def device_plan(gpus: int, learner_procs: int, rollouts: int) -> dict[str, str]:
    """`CUDA_VISIBLE_DEVICES` of each process: the learner's processes on the first GPUs and the
    rollout services one GPU each on the others, round robin; with no GPU to spare the rollouts
    share the learner's. Empty without GPUs (nothing is set)."""
    if gpus <= 0:
        return {}
    learner = list(range(min(learner_procs, gpus)))
    spare = [g for g in range(gpus) if g not in learner] or learner
    plan = {"learner": ",".join(map(str, learner))}
    for index in range(rollouts):
        plan[f"rollout-{index}"] = str(spare[index % len(spare)])
    return plan


@dataclass
class ProcessState:
    """One supervised process."""

    name: str
    address: str = ""
    metrics: str = ""
    pid: int = 0
    restarts: int = 0


@dataclass
class ClusterState:
    """What `DIR/cluster.json` holds."""

    dir: str
    ready: bool = False
    supervisor_pid: int = 0
    redis_url: str = ""
    learner: str = ""
    token_file: str = ""
    processes: dict[str, ProcessState] = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        write_json_atomically(folder / STATE_FILE, asdict(self))

    @classmethod
    def load(cls, folder: Path) -> ClusterState:
        path = folder / STATE_FILE
        if not path.exists():
            raise ClusterError(f"no local cluster in {folder} (start one with `skillfactory up`)")
        data = json.loads(path.read_text())
        processes = {k: ProcessState(**v) for k, v in data.pop("processes", {}).items()}
        return cls(**data, processes=processes)

    def metrics_urls(self) -> dict[str, str]:
        return {name: p.metrics for name, p in self.processes.items() if p.metrics}


def secret_file(path: Path) -> str:
    """The secret in `path`, created (mode 0600) on first use."""
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24))
    os.chmod(path, 0o600)
    return path.read_text().strip()


@dataclass
class ServiceSpec:
    """How to start one service process."""

    name: str
    args: list[str]
    port: int
    metrics_port: int
    devices: str | None = None
    """Its `CUDA_VISIBLE_DEVICES` (None: inherited)."""


class Supervisor:
    """Starts, watches and stops the cluster's processes (see the module docstring)."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.dir = config.dir.resolve()
        for sub in ("logs", "data", "learner", "weights"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.token = secret_file(self.dir / TOKEN_FILE)
        self.redis_password = secret_file(self.dir / REDIS_PASSWORD_FILE)
        self.redis = RedisServer(
            self.dir / "redis", password=self.redis_password, appendonly=True, appendfsync="always"
        )
        self.state = ClusterState(
            dir=str(self.dir), supervisor_pid=os.getpid(), token_file=str(self.dir / TOKEN_FILE)
        )
        self.services: list[ServiceSpec] = []
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.draining: list[subprocess.Popen[bytes]] = []
        """Rollout services scaled in, finishing their batch."""
        self.autoscaler: Autoscaler | None = None
        self.devices: dict[str, str] = {}
        self.rollout_args: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._stop_autoscaler = threading.Event()
        self._stopping = False

    # --- layout ------------------------------------------------------------------------------

    def plan(self) -> list[ServiceSpec]:
        """Every service with its ports, in start order."""
        redis_url = self.redis.url
        reward_port, learner_port, composer_port = free_port(), free_port(), free_port()
        common = ["--host", "127.0.0.1", "--log-level", "info"]
        cli = [sys.executable, "-m", "skillfactory.cli"]
        queue = [
            "--redis-url",
            redis_url,
            "--claim-idle-ms",
            str(self.config.claim_idle_ms),
        ]
        services = [
            ServiceSpec("reward", [*cli, "serve", "reward", *common], reward_port, free_port()),
            ServiceSpec(
                "composer",
                [*cli, "serve", "composer", "--data-root", str(self.dir / "data"), *common],
                composer_port,
                free_port(),
            ),
            ServiceSpec(
                "learner",
                [
                    *self.learner_launcher(),
                    "learner",
                    "serve",
                    "--state-dir",
                    str(self.dir / "learner"),
                    "--data-root",
                    self.config.data_root or os.getcwd(),
                    "--weights-dir",
                    str(self.dir / "weights"),
                    "--composer",
                    f"127.0.0.1:{composer_port}",
                    *queue,
                    *common,
                ],
                learner_port,
                free_port(),
            ),
        ]
        gpus = self.config.gpus if self.config.gpus is not None else visible_gpus()
        devices = device_plan(gpus, self.config.learner_procs, self.config.samplers)
        services[-1].devices = devices.get("learner")
        self.rollout_args = {"queue": queue, "reward": reward_port, "common": common, "cli": cli}
        self.devices = devices
        services += [self.rollout_service(index) for index in range(self.config.samplers)]
        return services

    def rollout_service(self, index: int) -> ServiceSpec:
        """Rollout service `rollout-<index>` (new ports; its GPU from the device plan)."""
        args = self.rollout_args
        model = ["--model", self.config.model] if self.config.model else []
        model += ["--engine", self.config.engine]
        if self.config.simulated_token_delay_ms > 0:
            model += ["--simulated-token-delay-ms", str(self.config.simulated_token_delay_ms)]
        name = f"rollout-{index}"
        command = [*args["cli"], "serve", "rollout", *model, *args["queue"]]
        command += ["--reward", f"127.0.0.1:{args['reward']}", "--samplers", "1", *args["common"]]
        for root in (self.config.data_root or os.getcwd(), str(self.dir), str(cache_root())):
            command += ["--model-root", root]
        return ServiceSpec(name, command, free_port(), free_port(), self.devices.get(name))

    def rollouts(self) -> list[ServiceSpec]:
        with self._lock:
            return [s for s in self.services if s.name.startswith("rollout-")]

    def replicas(self) -> int:
        """Rollout services running (a `ScaleTarget`)."""
        return len(self.rollouts())

    def set_replicas(self, count: int) -> None:
        """Start rollout services up to `count`, or drain the newest beyond it: SIGTERM, their
        workers finish the batch in hand, what they took and did not ack is reclaimed."""
        current = self.rollouts()
        for index in range(len(current), count):
            service = self.rollout_service(index)
            with self._lock:
                self.services.append(service)
            self.spawn(service)
        for service in current[count:]:
            with self._lock:
                self.services.remove(service)
            process = self.children.pop(service.name, None)
            self.state.processes.pop(service.name, None)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                self.draining.append(process)
        self.state.save(self.dir)

    def start_autoscaler(self) -> None:
        """Scale the rollout services with the backlog, when asked to."""
        if self.config.max_samplers <= self.config.samplers:
            return
        policy = ScalingPolicy(
            min_replicas=self.config.samplers,
            max_replicas=self.config.max_samplers,
            tasks_per_replica=self.config.tasks_per_replica,
            scale_up_cooldown_s=self.config.scale_up_cooldown_s,
            scale_down_cooldown_s=self.config.scale_down_cooldown_s,
        )
        # deferred: optional (redis, the serve extra; `skillfactory --help` needs none of it)
        from skillfactory.queue.redis_streams import RedisStreamsQueue

        queue = RedisStreamsQueue(self.redis.url, password=self.redis_password)
        self.autoscaler = Autoscaler(policy, self, lambda: backlog(queue))
        self.autoscaler.start(self._stop_autoscaler, period_s=1.0)

    def learner_launcher(self) -> list[str]:
        """`python -m skillfactory.cli`, under torchrun when the learner has several processes."""
        if self.config.learner_procs <= 1:
            return [sys.executable, "-m", "skillfactory.cli"]
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(self.config.learner_procs),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
            "-m",
            "skillfactory.cli",
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SKILLFACTORY_TOKEN=self.token,
            SKILLFACTORY_REDIS_PASSWORD=self.redis_password,
            OMP_NUM_THREADS=str(self.config.threads),
            PYTHONUNBUFFERED="1",
        )
        return env

    # --- processes ---------------------------------------------------------------------------

    def spawn(self, service: ServiceSpec) -> None:
        """Start one service and wait for its ready line."""
        ready_file = self.dir / "logs" / f"{service.name}.ready"
        ready_file.unlink(missing_ok=True)
        log = (self.dir / "logs" / f"{service.name}.log").open("ab")
        args = [
            *service.args,
            "--port",
            str(service.port),
            "--metrics-port",
            str(service.metrics_port),
        ]
        env = self.environment()
        if service.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = service.devices
        process = subprocess.Popen(args, stdout=ready_file.open("wb"), stderr=log, env=env)
        self.children[service.name] = process
        record = self.state.processes.setdefault(service.name, ProcessState(service.name))
        record.pid = process.pid
        record.address = f"127.0.0.1:{service.port}"
        record.metrics = f"http://127.0.0.1:{service.metrics_port}/metrics"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if ready_file.exists() and ready_file.read_text().strip():
                return
            if process.poll() is not None:
                raise ClusterError(
                    f"{service.name} exited with {process.returncode}; see "
                    f"{self.dir / 'logs' / (service.name + '.log')}"
                )
            time.sleep(0.1)
        raise ClusterError(f"{service.name} did not report ready in 300 s")

    def start(self) -> None:
        self.redis.start()
        self.state.redis_url = self.redis.url
        self.state.processes["redis"] = ProcessState(
            "redis", address=self.redis.url, pid=self.redis.pid or 0
        )
        self.services = self.plan()
        for service in self.services:
            self.spawn(service)
            self.state.save(self.dir)
        self.state.learner = self.state.processes["learner"].address
        self.state.ready = True
        self.state.save(self.dir)
        self.start_autoscaler()

    def watch(self) -> None:
        """Restart what dies until asked to stop."""
        while not self._stopping:
            if not self.redis.running():
                self.redis.restart()
                self.state.processes["redis"].restarts += 1
                self.state.processes["redis"].pid = self.redis.pid or 0
                self.state.save(self.dir)
            with self._lock:
                services = list(self.services)
            for service in services:
                if self._stopping:
                    break
                process = self.children.get(service.name)
                if process is not None and process.poll() is not None:
                    self.state.processes[service.name].restarts += 1
                    self.state.save(self.dir)  # counted as soon as seen, not once it is back
                    try:
                        self.spawn(service)
                    except ClusterError as error:
                        print(f"restart of {service.name} failed: {error}", file=sys.stderr)
                    self.state.save(self.dir)
            time.sleep(0.3)

    def stop(self, *_: Any) -> None:
        self._stopping = True

    def shutdown(self) -> None:
        """Stop the services (rollouts first, then the learner and the rest), then Redis."""
        self._stop_autoscaler.set()
        for drained in self.draining:
            if drained.poll() is None:
                drained.wait(self.config.grace_s)
        for service in reversed(self.services):
            process = self.children.get(service.name)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for service in reversed(self.services):
            process = self.children.get(service.name)
            if process is None:
                continue
            try:
                process.wait(self.config.grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.redis.stop()
        self.state.ready = False
        self.state.save(self.dir)


def supervise(config: ClusterConfig) -> int:
    """The supervisor process's body: start, restart what dies, stop on SIGTERM/SIGINT."""
    supervisor = Supervisor(config)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    (supervisor.dir / SUPERVISOR_PID).write_text(str(os.getpid()))
    try:
        supervisor.start()
        supervisor.watch()
    except ClusterError as error:
        print(str(error), file=sys.stderr)
        return 1
    finally:
        supervisor.shutdown()
        (supervisor.dir / SUPERVISOR_PID).unlink(missing_ok=True)
    return 0


def up(config: ClusterConfig, timeout_s: float = 600.0) -> ClusterState:
    """Start a supervisor in its own session and wait until the cluster is ready."""
    folder = config.dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if running_supervisor(folder) is not None:
        raise ClusterError(f"a cluster is already running in {folder} (`skillfactory down` first)")
    (folder / STATE_FILE).unlink(missing_ok=True)
    if not config.data_root:
        config.data_root = os.getcwd()
    (folder / CONFIG_FILE).write_text(config.to_json() + "\n")
    args = [sys.executable, "-m", "skillfactory.cluster.supervise", str(folder / CONFIG_FILE)]
    log = (folder / "supervisor.log").open("ab")
    process = subprocess.Popen(
        args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClusterError(f"the cluster did not start; see {folder / 'supervisor.log'}")
        try:
            state = ClusterState.load(folder)
        except (ClusterError, json.JSONDecodeError):
            state = None
        if state is not None and state.ready:
            return state
        time.sleep(0.2)
    process.terminate()
    raise ClusterError(f"the cluster was not ready in {timeout_s:.0f} s")


def running_supervisor(folder: Path) -> int | None:
    """The pid of the supervisor of `folder`, if one is alive."""
    path = folder / SUPERVISOR_PID
    if not path.exists():
        return None
    pid = int(path.read_text().strip() or 0)
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    return pid


def down(folder: Path, timeout_s: float = 120.0) -> bool:
    """Stop the cluster of `folder`; False when none was running."""
    pid = running_supervisor(folder.resolve())
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if running_supervisor(folder.resolve()) is None:
            return True
        time.sleep(0.2)
    raise ClusterError(f"the supervisor {pid} did not stop in {timeout_s:.0f} s")
