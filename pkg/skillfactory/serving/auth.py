"""Bearer-token authentication for gRPC servers.

A server configured with a token answers every call without `authorization: Bearer <token>`
metadata with UNAUTHENTICATED, except the health service, which probes must reach without secrets.
Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

TOKEN_ENV = "SKILLFACTORY_TOKEN"
"""Environment variable read for the token when no token file is given."""

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
"""Methods that need no token: health checks."""


class TokenError(ValueError):
    """A token file that cannot be used."""


def load_token(token_file: str | Path | None = None, env_var: str = TOKEN_ENV) -> str | None:
    """The token from `token_file` (surrounding whitespace stripped) or from `env_var`; None when
    neither is set. An unreadable or empty file raises `TokenError`."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise TokenError(f"cannot read token file {str(token_file)!r}: {error}") from None
        if not token:
            raise TokenError(f"token file {str(token_file)!r} is empty")
        return token
    return os.environ.get(env_var) or None


def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """Call metadata that carries `token`, for clients."""
    return (("authorization", f"Bearer {token}"),)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects calls whose `authorization` metadata is not `Bearer <token>`."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an empty token would accept anyone")
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method.startswith(EXEMPT_PREFIXES) or self._authorized(handler_call_details):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return _rejecting_handler(handler)

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        presented = b""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                presented = value.encode() if isinstance(value, str) else bytes(value)
                break
        return hmac.compare_digest(presented, self._expected)


def _abort(_request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")


def _rejecting_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""
    kwargs = {"response_serializer": handler.response_serializer}  # the request stays unparsed
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_abort, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_abort, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_abort, **kwargs)
    return grpc.unary_unary_rpc_method_handler(_abort, **kwargs)
