"""Bearer tokens and roles for the gRPC servers.

A server knows the tokens it accepts, each under a name whose first dotted part is its role
(`submitter`, `submitter.alice`, `rollout`, …). Every call but a health check must carry
`authorization: Bearer <token>` metadata of one of them: no token, or one the server does not
know, gets UNAUTHENTICATED; a known token whose role may not call the method gets
PERMISSION_DENIED. Probes reach the health service without secrets. Tokens are compared in
constant time, against every accepted token.

Roles, and what each may call (`allowed_roles`; `admin` may call everything):

| role | held by | may call |
|---|---|---|
| `admin` | operators | every RPC; cancels any run |
| `submitter` | users of the learner API | `Learner/*` (cancels only the runs it submitted), `Rollout` generation |
| `learner` | the learner service | `Composer/Compose`, `Rollout/*` |
| `rollout` | the rollout services' samplers | `RewardService/Score` |

The reward and composer services call nothing and hold no token of their own. One token given
with `--token-file` (or `$SKILLFACTORY_TOKEN`) is accepted as `admin`: one token for everyone, as
`skillfactory up` runs on loopback.

While a call runs, `current_caller()` names who made it (None on a server without tokens); the
learner records it as a run's submitter and checks it with `may_cancel`.
"""

from __future__ import annotations

import contextlib
import contextvars
import hmac
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import grpc

from skillfactory.serving.handlers import replace_behavior

TOKEN_ENV = "SKILLFACTORY_TOKEN"
"""Environment variable read for the token when no token file is given."""

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
"""Methods that need no token: health checks."""


class Role(StrEnum):
    """What a token may do (see the module docstring)."""

    ADMIN = "admin"
    SUBMITTER = "submitter"
    LEARNER = "learner"
    ROLLOUT = "rollout"


SERVICE_ROLES: dict[str, frozenset[Role]] = {
    "skillfactory.v1.Learner": frozenset({Role.SUBMITTER}),
    "skillfactory.v1.Composer": frozenset({Role.LEARNER}),
    "skillfactory.v1.RewardService": frozenset({Role.ROLLOUT}),
    "skillfactory.v1.Rollout": frozenset({Role.LEARNER, Role.SUBMITTER}),
}
"""Roles (besides admin) that may call every method of a service."""

METHOD_ROLES: dict[str, frozenset[Role]] = {
    "/skillfactory.v1.Rollout/UpdateWeights": frozenset({Role.LEARNER}),
}
"""Methods whose roles (besides admin) differ from their service's."""


def allowed_roles(method: str) -> frozenset[Role]:
    """Roles that may call `method` (`/package.Service/Method`); a service not listed: admin."""
    if method in METHOD_ROLES:
        return METHOD_ROLES[method] | {Role.ADMIN}
    service = method.strip("/").split("/", 1)[0]
    return SERVICE_ROLES.get(service, frozenset()) | {Role.ADMIN}


class TokenError(ValueError):
    """A token file or folder that cannot be used."""


@dataclass(frozen=True)
class Caller:
    """Who made a call: the accepted token's name and its role."""

    name: str
    role: Role

    @classmethod
    def named(cls, name: str) -> Caller:
        """`ROLE` or `ROLE.LABEL`; an unknown role raises `TokenError`."""
        role = name.split(".", 1)[0]
        try:
            return cls(name, Role(role))
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise TokenError(f"token {name!r}: unknown role {role!r} (roles: {allowed})") from None


@dataclass(frozen=True)
class TokenTable:
    """The tokens a server accepts, each with its caller."""

    entries: tuple[tuple[Caller, str], ...] = ()

    def __post_init__(self) -> None:
        if any(not token for _, token in self.entries):
            raise TokenError("an empty token would accept anyone")
        if len({token for _, token in self.entries}) != len(self.entries):
            raise TokenError("two callers share one token: they could not be told apart")

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __add__(self, other: TokenTable) -> TokenTable:
        return TokenTable(self.entries + other.entries)

    @classmethod
    def admin(cls, token: str | None) -> TokenTable:
        """One token with every right (the `--token-file` token), or none."""
        return cls(((Caller("admin", Role.ADMIN), token),)) if token else cls()

    @classmethod
    def from_dir(cls, folder: str | Path) -> TokenTable:
        """Every file of `folder` (a mounted Secret: file name = key), named `ROLE` or
        `ROLE.LABEL`, holding one token; hidden files (a Secret volume's `..data`) are skipped."""
        root = Path(folder)
        try:
            files = sorted(p for p in root.iterdir() if not p.name.startswith("."))
        except OSError as error:
            raise TokenError(f"cannot read the tokens folder {str(root)!r}: {error}") from None
        entries = tuple((Caller.named(path.name), load_token(path) or "") for path in files)
        if not entries:
            raise TokenError(f"the tokens folder {str(root)!r} holds no token")
        return cls(entries)

    def caller(self, presented: bytes) -> Caller | None:
        """The caller whose `Bearer <token>` header is `presented`; every token is compared."""
        found = None
        for caller, token in self.entries:
            if hmac.compare_digest(presented, f"Bearer {token}".encode()):
                found = caller
        return found

    def names(self) -> list[str]:
        return [caller.name for caller, _ in self.entries]


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


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def current_caller() -> Caller | None:
    """Who made the call being handled on this thread (None without auth)."""
    return _caller.get()


def may_cancel(caller: Caller | None, submitter: str) -> bool:
    """Whether `caller` may cancel a run that `submitter` (a caller name, '' without auth)
    submitted: an admin, the same token, or anyone on a server without tokens."""
    return caller is None or caller.role == Role.ADMIN or caller.name == submitter


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects calls without an accepted token (UNAUTHENTICATED) or whose token's role may not
    call the method (PERMISSION_DENIED); runs the others as their caller (`current_caller`)."""

    def __init__(self, tokens: TokenTable | str) -> None:
        table = TokenTable.admin(tokens) if isinstance(tokens, str) else tokens
        if not table:
            raise ValueError("an empty token would accept anyone")
        self.tokens = table

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if method.startswith(EXEMPT_PREFIXES) or handler is None:
            return handler
        caller = self.tokens.caller(_presented(handler_call_details))
        if caller is None:
            return _rejecting_handler(
                handler, grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token"
            )
        if caller.role not in allowed_roles(method):
            message = f"the {caller.role.value} role may not call {method}"
            return _rejecting_handler(handler, grpc.StatusCode.PERMISSION_DENIED, message)
        return _as_caller(handler, caller)


def _presented(details: grpc.HandlerCallDetails) -> bytes:
    for key, value in details.invocation_metadata or ():
        if key == "authorization":
            return value.encode() if isinstance(value, str) else bytes(value)
    return b""


def _as_caller(handler: grpc.RpcMethodHandler, caller: Caller) -> grpc.RpcMethodHandler:
    def unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            token = _caller.set(caller)
            try:
                return behavior(request, context)
            finally:
                _reset(token)

        return run

    def stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # The server iterates a stream on one thread, so the caller stays set between items.
            token = _caller.set(caller)
            try:
                yield from behavior(request, context)
            finally:
                _reset(token)

        return run

    return replace_behavior(handler, unary, stream)


def _reset(token: contextvars.Token[Caller | None]) -> None:
    with contextlib.suppress(ValueError):  # a stream closed by the collector on another thread
        _caller.reset(token)


def _rejecting_handler(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers `code`; the request stays unparsed."""

    def abort(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    kwargs = {"response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort, **kwargs)
    return grpc.unary_unary_rpc_method_handler(abort, **kwargs)
