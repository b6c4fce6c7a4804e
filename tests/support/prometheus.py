"""A real Prometheus for tests, and the PromQL of Grafana dashboards.

`PrometheusServer` runs the `prometheus` binary (Debian package `prometheus`, installed by
scripts/install-os-packages.sh) on a free loopback port with a temporary config that scrapes the
given `host:port` targets every second and a temporary TSDB; it stops cleanly on exit:

    with PrometheusServer(["127.0.0.1:9100"]) as prom:
        prom.wait_for_targets_up()
        results = prom.wait_for_data(dashboard_expressions(load_dashboard(path)))

The dashboard half reads the JSON the chart ships (charts/dashboards/): every target expression of
every panel (rows' nested panels included) with Grafana's variables replaced, the series names an
expression references (for the static check against what the services export), and the series
named by templating queries.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

DEFAULT_JOB = "skillfactory"
"""Job name of targets given as a plain list."""

BUILTIN_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "15000",
}
"""Grafana's built-in variables, with values that suit a test that scrapes every second."""


class PrometheusError(RuntimeError):
    """Prometheus did not start, refused a query, or a wait ran out of time."""


def prometheus_binary() -> str | None:
    """Path of the `prometheus` executable, or None when the OS package is not installed."""
    return shutil.which("prometheus")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape_config(
    targets: Sequence[str] | Mapping[str, Sequence[str]], interval: str = "1s"
) -> dict[str, Any]:
    """A Prometheus config scraping `targets` (a list, or job name → list) every `interval`."""
    jobs = {DEFAULT_JOB: list(targets)} if not isinstance(targets, Mapping) else dict(targets)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "static_configs": [{"targets": list(addresses)}],
            }
            for job, addresses in jobs.items()
        ],
    }


class PrometheusServer:
    """One `prometheus` process on 127.0.0.1 with its own config and TSDB in a temp folder."""

    def __init__(
        self,
        targets: Sequence[str] | Mapping[str, Sequence[str]] = (),
        scrape_interval: str = "1s",
        binary: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """Scrape `targets` every `scrape_interval`, or run with a whole `config` instead."""
        self.config = (
            dict(config) if config is not None else scrape_config(targets, scrape_interval)
        )
        self.binary = binary or prometheus_binary()
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 30.0, attempts: int = 3) -> PrometheusServer:
        """Write the config, start the process and wait until `/-/ready` answers 200."""
        if self.binary is None:
            raise PrometheusError("the prometheus binary is not installed (OS package prometheus)")
        self._workdir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        config = self._workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config))
        for attempt in range(attempts):  # another process may take the free port first
            self.port = free_port()
            self._launch(config)
            try:
                self._wait_ready(timeout_s)
                return self
            except PrometheusError:
                exited = self._process is not None and self._process.poll() is not None
                self._terminate()
                if not exited or attempt == attempts - 1:
                    self.stop()
                    raise
        raise AssertionError("unreachable")

    def _launch(self, config: Path) -> None:
        assert self.binary is not None and self._workdir is not None
        log = (self._workdir / "prometheus.log").open("ab")
        self._process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self._workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()  # the child holds its own descriptor

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise PrometheusError(f"prometheus exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready after {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the process's log (for error messages)."""
        if self._workdir is None or not (self._workdir / "prometheus.log").exists():
            return ""
        return (self._workdir / "prometheus.log").read_text(errors="replace")[-chars:]

    def _terminate(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 15 s) and delete the temp folder."""
        self._terminate()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:  # 400/422 carry the PromQL error as JSON
            body = json.load(error)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate `expr` now (/api/v1/query): one `{"metric": labels, "value": [t, "v"]}` per
        series; a scalar or string result is one item with empty labels."""
        data = self._api("/api/v1/query", {"query": expr})
        if data["resultType"] in {"scalar", "string"}:
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def active_targets(self) -> list[dict[str, Any]]:
        """The scrape targets with their `labels`, `health` ("up", "down", "unknown") and
        `lastError`."""
        targets: list[dict[str, Any]] = self._api("/api/v1/targets")["activeTargets"]
        return targets

    def dropped_targets(self) -> list[dict[str, Any]]:
        """Targets relabelling dropped, with their `discoveredLabels`."""
        targets: list[dict[str, Any]] = self._api("/api/v1/targets")["droppedTargets"]
        return targets

    def wait_for_discovery(
        self, count: int, timeout_s: float = 10.0
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Wait until `count` targets were discovered (kept or dropped by relabelling); returns
        (active, dropped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            active, dropped = self.active_targets(), self.dropped_targets()
            if len(active) + len(dropped) >= count or time.monotonic() >= deadline:
                return active, dropped
            time.sleep(0.1)

    def wait_for_targets_up(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Wait until every target was scraped successfully; raises with their errors if not."""
        deadline = time.monotonic() + timeout_s
        targets = self.active_targets()
        while time.monotonic() < deadline:
            targets = self.active_targets()
            if targets and all(t["health"] == "up" for t in targets):
                return targets
            time.sleep(0.25)
        states = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
        raise PrometheusError(f"targets not up after {timeout_s} s: {states}")

    def wait_for_data(
        self, exprs: Sequence[str], timeout_s: float = 30.0
    ) -> dict[str, list[dict[str, Any]]]:
        """Evaluate every expression until each returns at least one finite sample, or until the
        timeout; returns the last result of each (empty where there was none)."""
        deadline = time.monotonic() + timeout_s
        while True:
            results = {expr: self.query(expr) for expr in exprs}
            if all(has_finite_value(r) for r in results.values()):
                return results
            if time.monotonic() >= deadline:
                return results
            time.sleep(0.5)


def has_finite_value(result: Sequence[dict[str, Any]]) -> bool:
    """True when a query result holds at least one sample that is a finite number."""
    return any(math.isfinite(float(item["value"][1])) for item in result)


# --- Grafana dashboards -------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")
_TEMPLATING_FUNCTION = re.compile(r"^\s*(label_values|query_result|label_names)\((.*)\)\s*$")


def load_dashboard(path: str | Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(Path(path).read_text())
    return dashboard


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, depth first: rows and the panels a collapsed row nests included."""
    stack = list(reversed(dashboard.get("panels", [])))
    while stack:
        panel = stack.pop()
        yield panel
        stack.extend(reversed(panel.get("panels", [])))


def raw_expressions(dashboard: Mapping[str, Any]) -> list[str]:
    """Every non-empty `targets[].expr` of every panel, variables left as written."""
    return [
        target["expr"]
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr", "").strip()
    ]


def dashboard_variables(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Values that select everything: Grafana's built-ins, "All" (`allValue`, else `.*`) for
    query variables that offer it, the current or first option for the others."""
    values = dict(BUILTIN_VARIABLES)
    for var in dashboard.get("templating", {}).get("list", []):
        name, kind = var["name"], var.get("type")
        if kind == "datasource":
            values[name] = var.get("query", "prometheus")
        elif var.get("includeAll"):
            values[name] = var.get("allValue") or ".*"
        elif (var.get("current") or {}).get("value") is not None:
            values[name] = str(var["current"]["value"])
        elif var.get("options"):
            values[name] = str(var["options"][0]["value"])
        elif kind in {"constant", "textbox", "custom"}:
            values[name] = str(var.get("query", ""))
    return values


def substitute_variables(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with `$var`, `${var}`, `${var:format}` and `[[var]]` replaced; an unknown variable
    raises KeyError (a dashboard must not query a variable it does not define)."""

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def dashboard_expressions(dashboard: Mapping[str, Any]) -> list[str]:
    """Every panel expression, ready to evaluate: variables replaced by `dashboard_variables`."""
    values = dashboard_variables(dashboard)
    return [substitute_variables(expr, values) for expr in raw_expressions(dashboard)]


def templating_expressions(dashboard: Mapping[str, Any]) -> list[str]:
    """The PromQL inside query variables (`label_values(SELECTOR, label)` → `SELECTOR`)."""
    exprs = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, Mapping) else str(query or "")
        match = _TEMPLATING_FUNCTION.match(text)
        if match is None:
            exprs.append(text)
        elif match.group(1) == "label_values":
            args = match.group(2).rsplit(",", 1)
            if len(args) == 2:  # label_values(label) alone names no series
                exprs.append(args[0])
        elif match.group(1) == "query_result":
            exprs.append(match.group(2))
    return [e for e in exprs if e.strip()]


# --- PromQL series names ------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w.:$])[a-zA-Z_:][\w:]*")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "atan2",
    "inf",
    "nan",
}


def series_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    aggregations, keywords, labels (in `{}` or grouping clauses), durations or strings.

    Written for the dashboards' PromQL; a selector by `__name__` is refused rather than missed."""
    if "__name__" in expr:
        raise ValueError(f"selecting by __name__ hides the series name: {expr!r}")
    text = _STRING.sub('""', expr)
    text = _LABEL_MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names
