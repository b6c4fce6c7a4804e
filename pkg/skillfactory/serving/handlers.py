"""Wrapping the behavior of a gRPC method handler, for server interceptors.

`replace_behavior(handler, unary, stream)` returns a handler of the same shape (request and
response streaming, serializers) whose behavior is `unary(behavior)` for a unary response and
`stream(behavior)` for a streamed one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]


def replace_behavior(handler: grpc.RpcMethodHandler, unary: Wrap, stream: Wrap) -> Any:
    """`handler` with its behavior wrapped (see the module docstring)."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kwargs)
