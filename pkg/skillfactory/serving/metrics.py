"""Prometheus metrics of a gRPC server, served over HTTP at `/metrics`.

Each server owns a `CollectorRegistry` (so two servers in one process never share series) with the
request series every service has, recorded by `MetricsInterceptor`:

- `skillfactory_grpc_requests_total{service,method,code}` — finished calls by status code;
- `skillfactory_grpc_request_seconds{service,method}` — latency histogram;
- `skillfactory_grpc_in_flight{service,method}` — calls being handled now.

Services add their own series to `registry` (see `skillfactory.serving.reward`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Seconds; from a health check (sub-millisecond) to a large reward batch (seconds)."""


@dataclass
class ServerMetrics:
    """The request series of one server, in its own registry."""

    service: str
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        labels = ("service", "method")
        self.requests = Counter(
            "skillfactory_grpc_requests",
            "Finished gRPC calls by method and status code.",
            (*labels, "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "skillfactory_grpc_request_seconds",
            "Time to handle a gRPC call, in seconds.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "skillfactory_grpc_in_flight",
            "gRPC calls being handled now.",
            labels,
            registry=self.registry,
        )


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts, times and tracks every call; put it first so rejected calls are counted too."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return _instrumented(handler, self.metrics, handler_call_details.method)


class _Call:
    """Bookkeeping of one call: in-flight while open, then its code and latency."""

    def __init__(self, metrics: ServerMetrics, method: str) -> None:
        self.metrics = metrics
        self.labels = (metrics.service, method)
        self.start = time.perf_counter()
        metrics.in_flight.labels(*self.labels).inc()

    def finish(self, context: grpc.ServicerContext, error: BaseException | None) -> None:
        code = _code_of(context, error)
        self.metrics.in_flight.labels(*self.labels).dec()
        self.metrics.latency.labels(*self.labels).observe(time.perf_counter() - self.start)
        self.metrics.requests.labels(*self.labels, code).inc()


def _code_of(context: grpc.ServicerContext, error: BaseException | None) -> str:
    code = context.code()  # set by context.abort / set_code
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if error is not None else "OK"


def _instrumented(handler: grpc.RpcMethodHandler, metrics: ServerMetrics, method: str) -> Any:
    def unary_response(behavior: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
            call = _Call(metrics, method)
            try:
                response = behavior(request, context)
            except BaseException as error:
                call.finish(context, error)
                raise
            call.finish(context, None)
            return response

        return wrapper

    def stream_response(behavior: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            call = _Call(metrics, method)
            try:
                yield from behavior(request, context)
            except BaseException as error:
                call.finish(context, error)
                raise
            call.finish(context, None)

        return wrapper

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            stream_response(handler.stream_stream), **kwargs
        )
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary_response(handler.stream_unary), **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(stream_response(handler.unary_stream), **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary_response(handler.unary_unary), **kwargs)


class MetricsEndpoint:
    """`/metrics` of a registry over HTTP, on a background thread."""

    def __init__(self, registry: CollectorRegistry, port: int = 0, host: str = "127.0.0.1") -> None:
        self._httpd: WSGIServer
        self._thread: threading.Thread
        self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host = host
        self.port: int = self._httpd.server_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
