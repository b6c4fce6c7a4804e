"""Run a rendered chart's pods as local processes, and do what the kubelet and Prometheus would.

`Cluster(docs, root, host_ip, namespace)` takes the chart's rendered objects; `start(pod)` runs one
Deployment's or StatefulSet's container the way the kubelet would start it, with these stand-ins
for what a node provides:

- **image**: the container's `command` (or the image's entrypoint, `skillfactory`, as
  services/Dockerfile declares it) runs from this checkout's virtual environment; `redis-server`,
  `sh` and `redis-cli` are this machine's;
- **volumes**: every volume is a folder under `root` (emptyDir per pod, a claim per claim name, a
  volumeClaimTemplate per pod; Secrets and ConfigMaps written out from the rendered objects, with
  their `items`, `defaultMode` and projections), and every string of the container (command,
  args, env values, workingDir, exec probes) has each mount path replaced by its folder;
- **network**: a pod's network namespace would give it its own ports and its own IP. Here every
  pod shares this machine's: the chart is rendered with ports that are free here (distinct per
  component), the pod IP is `host_ip` (this machine's non-loopback address), and a Service's
  name (short or qualified) with its port becomes `127.0.0.1:<the selected pod's container
  port>` — what cluster DNS and kube-proxy do;
- **env**: `value`, `secretKeyRef` (the rendered Secret), `configMapKeyRef`, `fieldRef`
  (namespace, pod name, pod IP) and `$(VAR)` expansion in env values, command and args;
- the user, the read-only root filesystem and resource limits are not applied (the schema tests
  check them): the processes run as this machine's user.

`probe(pod, probe)` runs one declared probe (grpc, exec, tcpSocket, httpGet) against `host_ip`,
as the kubelet does against the pod IP; `wait_ready(pod)` runs the startup probe, then readiness
until it passes; `scrape(pod)` fetches `/metrics` from each container port named `metrics`.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

VENV_BIN = Path(sys.executable).parent
ENTRYPOINT = [sys.executable, "-m", "skillfactory.cli"]
"""The images' ENTRYPOINT (`skillfactory`, services/Dockerfile), from this checkout."""


def host_address() -> str | None:
    """This machine's non-loopback IPv4 address (the interface of its default route), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: no packet is sent
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass
class Pod:
    """One workload's first replica."""

    workload: dict[str, Any]
    name: str
    container: dict[str, Any]
    folders: dict[str, Path] = field(default_factory=dict)
    """mountPath → local folder (or file, for a subPath)."""
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.workload["spec"]["template"]["spec"])

    @property
    def component(self) -> str:
        return str(self.workload["metadata"]["labels"].get("app.kubernetes.io/component", ""))

    @property
    def ports(self) -> dict[str, int]:
        return {p["name"]: int(p["containerPort"]) for p in self.container.get("ports", [])}

    def port(self, value: int | str) -> int:
        return self.ports[value] if isinstance(value, str) else int(value)

    def log_tail(self, lines: int = 40) -> str:
        if self.log is None or not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


class Cluster:
    """The rendered objects, run as local processes (see the module docstring)."""

    def __init__(
        self, docs: list[dict[str, Any]], root: Path, host_ip: str, namespace: str
    ) -> None:
        self.docs = docs
        self.root = root
        self.host_ip = host_ip
        self.namespace = namespace
        self.pods = [
            Pod(d, self._pod_name(d), d["spec"]["template"]["spec"]["containers"][0])
            for d in docs
            if d["kind"] in {"Deployment", "StatefulSet"}
        ]
        self._services = self._service_addresses()

    # --- objects -------------------------------------------------------------------------------

    @staticmethod
    def _pod_name(workload: dict[str, Any]) -> str:
        name = workload["metadata"]["name"]
        return f"{name}-0" if workload["kind"] == "StatefulSet" else f"{name}-7d9f8-x2k4q"

    def find(self, kind: str, name: str) -> dict[str, Any]:
        return next(d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name)

    def secret(self, name: str) -> dict[str, bytes]:
        doc = self.find("Secret", name)
        data = {k: base64.b64decode(v) for k, v in (doc.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (doc.get("stringData") or {}).items()})
        return data

    def config_map(self, name: str) -> dict[str, bytes]:
        doc = self.find("ConfigMap", name)
        return {k: str(v).encode() for k, v in (doc.get("data") or {}).items()}

    def pod(self, component: str) -> Pod:
        return next(p for p in self.pods if p.component == component)

    def _service_addresses(self) -> dict[str, str]:
        """'name:port' (and the qualified names) → '127.0.0.1:<container port>'."""
        addresses: dict[str, str] = {}
        for service in (d for d in self.docs if d["kind"] == "Service"):
            selector = service["spec"].get("selector", {})
            pods = [
                p
                for p in self.pods
                if labels_match(selector, p.workload["spec"]["template"]["metadata"]["labels"])
            ]
            if not pods:
                continue
            name = service["metadata"]["name"]
            for port in service["spec"]["ports"]:
                target = pods[0].port(port.get("targetPort", port["port"]))
                for host in (
                    name,
                    f"{name}.{self.namespace}",
                    f"{name}.{self.namespace}.svc",
                    f"{name}.{self.namespace}.svc.cluster.local",
                ):
                    addresses[f"{host}:{port['port']}"] = f"127.0.0.1:{target}"
        return addresses

    # --- strings -------------------------------------------------------------------------------

    def localize(self, pod: Pod, text: str) -> str:
        """Mount paths → their folders, Service addresses → loopback, in one pass."""
        replacements = {**self._services, **{m: str(f) for m, f in pod.folders.items()}}
        alternatives = sorted(replacements, key=len, reverse=True)
        pattern = re.compile(
            r"(?<![\w.-])(" + "|".join(re.escape(a) for a in alternatives) + r")(?![\w.-])"
        )
        return pattern.sub(lambda m: replacements[m.group(1)], text)

    @staticmethod
    def expand(text: str, env: dict[str, str]) -> str:
        """Kubernetes' `$(VAR)` expansion ($$ escapes)."""
        return re.sub(
            r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
            lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
            text,
        )

    # --- volumes and env -----------------------------------------------------------------------

    def _write_files(self, folder: Path, data: dict[str, bytes], source: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        mode = source.get("defaultMode", 0o644)
        for item in items:
            path = folder / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data[item["key"]])
            path.chmod(item.get("mode", mode))

    def _volume(self, pod: Pod, volume: dict[str, Any]) -> Path:
        name = volume["name"]
        if "persistentVolumeClaim" in volume:
            folder = self.root / "claims" / volume["persistentVolumeClaim"]["claimName"]
        else:
            folder = self.root / "pods" / pod.name / name
        if "secret" in volume:
            source = volume["secret"]
            self._write_files(folder, self.secret(source["secretName"]), source)
        elif "configMap" in volume:
            source = volume["configMap"]
            self._write_files(folder, self.config_map(source["name"]), source)
        elif "projected" in volume:
            for part in volume["projected"]["sources"]:
                if "secret" in part:
                    data = self.secret(part["secret"]["name"])
                    self._write_files(folder, data, part["secret"])
                elif "configMap" in part:
                    data = self.config_map(part["configMap"]["name"])
                    self._write_files(folder, data, part["configMap"])
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _mounts(self, pod: Pod) -> dict[str, Path]:
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        for template in pod.workload["spec"].get("volumeClaimTemplates", []):
            claim = f"{template['metadata']['name']}-{pod.name}"
            volumes[template["metadata"]["name"]] = {
                "name": template["metadata"]["name"],
                "persistentVolumeClaim": {"claimName": claim},
            }
        folders: dict[str, Path] = {}
        for mount in pod.container.get("volumeMounts", []):
            if mount["mountPath"] == "/dev/shm":
                continue  # this machine's /dev/shm
            folder = self._volume(pod, volumes[mount["name"]])
            folders[mount["mountPath"]] = folder / mount.get("subPath", "")
        return folders

    def _env(self, pod: Pod) -> dict[str, str]:
        env: dict[str, str] = {}
        fields = {
            "metadata.namespace": self.namespace,
            "metadata.name": pod.name,
            "status.podIP": self.host_ip,
        }
        for item in pod.container.get("env", []):
            source = item.get("valueFrom")
            if source is None:
                value = self.expand(str(item.get("value", "")), env)
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                value = self.secret(ref["name"])[ref["key"]].decode()
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                value = self.config_map(ref["name"])[ref["key"]].decode()
            else:
                value = fields[source["fieldRef"]["fieldPath"]]
            env[item["name"]] = value
        return env

    # --- processes -----------------------------------------------------------------------------

    def command(self, pod: Pod) -> list[str]:
        """The container's command line with its stand-ins (module docstring)."""
        declared = list(pod.container.get("command") or []) + list(pod.container.get("args", []))
        words = [self.localize(pod, self.expand(w, pod.env)) for w in declared]
        # the image's entrypoint is this machine's interpreter: a host path, not mapped (it may
        # lie under a mount path such as /tmp)
        return words if pod.container.get("command") else [*ENTRYPOINT, *words]

    def start(self, pod: Pod, extra_env: dict[str, str] | None = None) -> None:
        pod.folders = self._mounts(pod)
        pod.env = {k: self.localize(pod, v) for k, v in self._env(pod).items()}
        path = f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"
        env = {"PATH": path, "LANG": "C.UTF-8", **(extra_env or {}), **pod.env}
        working = pod.container.get("workingDir")
        cwd = self.localize(pod, working) if working else str(self.root / "pods" / pod.name)
        Path(cwd).mkdir(parents=True, exist_ok=True)
        pod.log = self.root / "logs" / f"{pod.name}.log"
        pod.log.parent.mkdir(parents=True, exist_ok=True)
        with pod.log.open("wb") as sink:
            pod.process = subprocess.Popen(
                self.command(pod),
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as a container's processes
            )

    def stop(self, pod: Pod, grace_s: float = 10.0) -> None:
        process = pod.process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    # --- what the kubelet and Prometheus do ----------------------------------------------------

    def probe(self, pod: Pod, probe: dict[str, Any]) -> tuple[bool, str]:
        """Run one probe as the kubelet would (against the pod IP); (passed, why not)."""
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "grpc" in probe:
                address = f"{self.host_ip}:{pod.port(probe['grpc']['port'])}"
                with grpc.insecure_channel(address) as channel:
                    request = health_pb2.HealthCheckRequest(
                        service=probe["grpc"].get("service", "")
                    )
                    answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
                serving = answer.status == health_pb2.HealthCheckResponse.SERVING
                return serving, f"grpc health {address}: {answer.status}"
            if "tcpSocket" in probe:
                port = pod.port(probe["tcpSocket"]["port"])
                with socket.create_connection((self.host_ip, port), timeout=timeout):
                    return True, ""
            if "httpGet" in probe:
                get = probe["httpGet"]
                url = f"http://{self.host_ip}:{pod.port(get['port'])}{get.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    return 200 <= response.status < 400, f"GET {url}: {response.status}"
            if "exec" in probe:
                command = [self.localize(pod, w) for w in probe["exec"]["command"]]
                path = f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"
                result = subprocess.run(
                    command,
                    env={"PATH": path, **pod.env},
                    capture_output=True,
                    timeout=max(timeout, 10.0),  # a Python exec probe starts slowly on 2 cores
                    check=False,
                )
                why = (result.stdout + result.stderr).decode(errors="replace")
                return result.returncode == 0, f"exec exit {result.returncode}: {why}"
        except (OSError, grpc.RpcError, subprocess.TimeoutExpired) as error:
            return False, f"{type(error).__name__}: {error}"
        raise ValueError(f"unknown probe {probe}")

    def wait_ready(self, pod: Pod, timeout_s: float) -> None:
        """The startup probe until it passes, then readiness; the liveness probe once."""
        deadline = time.monotonic() + timeout_s
        for kind in ("startupProbe", "readinessProbe"):
            probe = pod.container.get(kind)
            if probe is None:
                continue
            why = ""
            while time.monotonic() < deadline:
                assert pod.process is not None
                if pod.process.poll() is not None:
                    raise AssertionError(
                        f"{pod.name} exited {pod.process.returncode}:\n{pod.log_tail()}"
                    )
                passed, why = self.probe(pod, probe)
                if passed:
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"{pod.name}: {kind} failed ({why}):\n{pod.log_tail()}")
        liveness = pod.container.get("livenessProbe")
        if liveness is not None:
            passed, why = self.probe(pod, liveness)
            assert passed, f"{pod.name}: livenessProbe failed ({why}):\n{pod.log_tail()}"

    def scrape(self, pod: Pod) -> dict[int, str]:
        """`/metrics` of every container port named `metrics`, on the pod IP, as Prometheus
        scrapes it: {port: body}. A port that does not answer raises."""
        bodies = {}
        for name, port in pod.ports.items():
            if name != "metrics":
                continue
            url = f"http://{self.host_ip}:{port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    bodies[port] = response.read().decode()
            except OSError as error:
                raise AssertionError(
                    f"{pod.name}: Prometheus cannot scrape {url}: {error}"
                ) from None
        return bodies
