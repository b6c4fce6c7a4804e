"""The gRPC server every service runs on: thread pool, message size limits, health service, bearer
tokens and roles, TLS, Prometheus metrics and graceful shutdown.

    server = ServiceServer("reward", ServingConfig(port=0, metrics_port=0))
    server.add_service(RewardServicer.SERVICE_NAME, RewardServicer(...).add_to)
    server.start()
    server.wait_for_termination_signal()   # SIGTERM/SIGINT → graceful stop

A server on an address other than loopback needs tokens (`token`, `tokens`) unless
`insecure_no_auth` says otherwise: nothing is open by default.

Streaming calls (a `WatchRun`, a `GenerateStream`) hold a thread for as long as they last, so at
most `max_streams` run at once, on threads of their own: the pool has `max_workers` threads for
unary calls plus `max_streams`, and a stream past the limit is answered RESOURCE_EXHAUSTED at
once. Health checks and short calls thus always find a thread. With `health_port`, the health
service also answers in plaintext on a port of its own (the kubelet's gRPC probes speak no TLS).

Shutdown order: health turns NOT_SERVING for every service (load balancers and probes stop sending
work), new calls keep being served for `drain_s`, then the server stops accepting calls and gives
the calls in flight up to `grace_s` to finish; connections stay open `linger_s` more so the last
responses are flushed (a process that exits at once resets them); finally metrics close.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from skillfactory.serving.auth import BearerTokenInterceptor, TokenTable
from skillfactory.serving.handlers import replace_behavior
from skillfactory.serving.metrics import MetricsEndpoint, MetricsInterceptor, ServerMetrics

log = logging.getLogger(__name__)

MIB = 1024 * 1024
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) only reaches this machine; other names count as
    reachable from elsewhere."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServingConfig:
    """How a service listens. Ports 0 pick a free port; see `ServiceServer.address`."""

    host: str = "127.0.0.1"
    """Interface the gRPC port binds; 0.0.0.0 in a container."""
    port: int = 0
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = 0
    """Port of the Prometheus `/metrics` endpoint; 0 picks a free one, None turns it off."""
    metrics_host: str = "127.0.0.1"
    """Interface the metrics endpoint binds."""
    max_workers: int = 8
    """Threads handling calls; each in-flight call holds one."""
    max_message_mb: float = 16.0
    """Largest request and response, in MiB; a larger request gets RESOURCE_EXHAUSTED."""
    grace_s: float = 30.0
    """On shutdown, how long calls in flight may take to finish before they are cancelled."""
    drain_s: float = 0.0
    """On shutdown, how long to keep serving after health turns NOT_SERVING."""
    linger_s: float = 2.0
    """On shutdown, how long connections stay open after the last call ended, so that its response
    (already handed to the transport) reaches the client before the process exits; 0.5 s was
    seen to cut a multi-MB response on 2 busy cores."""
    max_streams: int = 4
    """Streaming calls served at once, on threads besides `max_workers`; more are refused."""
    health_port: int | None = None
    """Plaintext port serving only the health service (for probes); 0 picks one, None: none."""
    token: str | None = None
    """Bearer token accepted with the admin role (`skillfactory.serving.auth`): one token for
    every caller."""
    tokens: TokenTable = field(default_factory=TokenTable)
    """Further tokens accepted, each with its caller's name and role."""
    insecure_no_auth: bool = False
    """Serve without any token on an address other than loopback (refused otherwise)."""
    client_token: str | None = None
    """Token this service sends to the services it calls; None sends `token`."""
    tls_cert: Path | None = None
    """PEM certificate chain; with `tls_key`, the port speaks TLS only."""
    tls_key: Path | None = None
    """PEM private key of `tls_cert`."""
    tls_ca: Path | None = None
    """PEM CA certificates this service's clients verify the services they call against (TLS);
    None calls them in plaintext."""

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and a key")
        if self.max_message_mb <= 0 or self.max_workers < 1 or self.max_streams < 1:
            raise ValueError("max_message_mb, max_workers and max_streams must be positive")
        if min(self.grace_s, self.drain_s, self.linger_s) < 0:
            raise ValueError("grace_s, drain_s and linger_s must be ≥ 0")
        if not self.callers and not self.insecure_no_auth and not is_loopback(self.host):
            raise ValueError(
                f"refusing to serve on {self.host} without a token: anyone who reaches it could "
                "call every RPC. Give a token (--token-file, --tokens-dir or $SKILLFACTORY_TOKEN), "
                "bind 127.0.0.1, or pass --insecure-no-auth to serve without authentication"
            )

    @property
    def callers(self) -> TokenTable:
        """Every token the server accepts: `token` (as admin) and `tokens`."""
        return TokenTable.admin(self.token) + self.tokens

    @property
    def outgoing_token(self) -> str | None:
        """The token sent to the services this one calls."""
        return self.client_token if self.client_token is not None else self.token

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * MIB)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


class ServiceServer:
    """One gRPC server with the standard health service, metrics and (optional) auth and TLS."""

    def __init__(self, service: str, config: ServingConfig) -> None:
        self.service = service
        self.config = config
        self.metrics = ServerMetrics(service)
        interceptors: list[grpc.ServerInterceptor] = [MetricsInterceptor(self.metrics)]
        if config.callers:
            interceptors.append(BearerTokenInterceptor(config.callers))
        interceptors.append(StreamLimitInterceptor(config.max_streams))
        limit = config.max_message_bytes
        threads = config.max_workers + config.max_streams
        self._grpc = grpc.server(
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix=service),
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ],
        )
        self.health = health.HealthServicer(
            experimental_non_blocking=True,
            experimental_thread_pool=ThreadPoolExecutor(max_workers=1),
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        self._health_grpc: grpc.Server | None = None
        if config.health_port is not None:
            self._health_grpc = grpc.server(
                ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"{service}-health"),
                options=[("grpc.max_receive_message_length", 64 * 1024)],
            )
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_grpc)
        self._service_names: list[str] = []
        self._endpoint: MetricsEndpoint | None = None
        self._port: int | None = None
        self._health_port: int | None = None
        self._stopped = threading.Event()

    def add_service(self, name: str, add_to_server: Callable[[grpc.Server], Any]) -> None:
        """Register a servicer (`add_to_server(grpc_server)`) whose health is reported as `name`."""
        add_to_server(self._grpc)
        self._service_names.append(name)

    def start(self) -> None:
        """Bind, start serving, open the metrics endpoint and report SERVING."""
        bind = f"{self.config.host}:{self.config.port}"
        if self.config.tls:
            assert self.config.tls_cert is not None and self.config.tls_key is not None
            credentials = grpc.ssl_server_credentials(
                [(self.config.tls_key.read_bytes(), self.config.tls_cert.read_bytes())]
            )
            self._port = self._grpc.add_secure_port(bind, credentials)
        else:
            self._port = self._grpc.add_insecure_port(bind)
        if self._health_grpc is not None:
            health_bind = f"{self.config.host}:{self.config.health_port}"
            self._health_port = self._health_grpc.add_insecure_port(health_bind)
            self._health_grpc.start()
        self._grpc.start()
        if not self.config.callers:
            log.warning(
                "serving without authentication: anyone who reaches the port may call every RPC",
                extra={"host": self.config.host, "insecure_no_auth": self.config.insecure_no_auth},
            )
        if self.config.metrics_port is not None:
            self._endpoint = MetricsEndpoint(
                self.metrics.registry, self.config.metrics_port, self.config.metrics_host
            )
        for name in ("", *self._service_names):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"address": self.address, "metrics": self.metrics_url})

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def health_port(self) -> int | None:
        """The plaintext health port, when configured and started."""
        return self._health_port

    @property
    def address(self) -> str:
        """`host:port` clients dial."""
        return f"{self.config.host}:{self.port}"

    @property
    def metrics_url(self) -> str | None:
        return self._endpoint.url if self._endpoint is not None else None

    def ready_info(self) -> dict[str, Any]:
        """What a launcher needs to reach this server, printed as the ready line."""
        return {
            "service": self.service,
            "address": self.address,
            "metrics": self.metrics_url,
            "tls": self.config.tls,
            "auth": bool(self.config.callers),
            "health_port": self._health_port,
        }

    def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, drain, stop accepting, let in-flight calls finish."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_s if grace_s is None else grace_s
        log.info("shutting down", extra={"drain_s": self.config.drain_s, "grace_s": grace})
        self.health.enter_graceful_shutdown()
        if self.config.drain_s:
            time.sleep(self.config.drain_s)
        self._grpc.stop(grace).wait()
        if self._health_grpc is not None:
            self._health_grpc.stop(0).wait()
        if self.config.linger_s:
            time.sleep(self.config.linger_s)
        if self._endpoint is not None:
            self._endpoint.close()
        log.info("stopped")

    def wait_for_termination_signal(self) -> int:
        """Block until SIGTERM or SIGINT (main thread only), then stop gracefully; returns the
        number of the signal."""
        received: list[int] = []
        wake = threading.Event()

        def on_signal(number: int, _frame: FrameType | None) -> None:
            received.append(number)
            wake.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not wake.wait(timeout=1.0):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("signal received", extra={"signal": signal.Signals(received[0]).name})
        self.stop()
        return received[0]


class StreamLimitInterceptor(grpc.ServerInterceptor):
    """At most `limit` streaming calls (streamed requests or responses) at once; the next one is
    answered RESOURCE_EXHAUSTED without waiting, so streams never take the unary calls' threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        return replace_behavior(handler, self._limited, self._limited_stream)

    def _refuse(self, context: grpc.ServicerContext) -> None:
        context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{self.limit} streams are open on this server, the most it serves at once; "
            "try again later",
        )

    def _limited(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            if not self._slots.acquire(blocking=False):
                self._refuse(context)
            try:
                return behavior(request, context)
            finally:
                self._slots.release()

        return run

    def _limited_stream(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            if not self._slots.acquire(blocking=False):
                self._refuse(context)
            once = threading.Lock()

            def release() -> None:
                if once.acquire(blocking=False):
                    self._slots.release()

            if not context.add_callback(release):  # a cancelled stream may never resume
                release()  # already over
                return
            try:
                yield from behavior(request, context)
            finally:
                release()

        return run
