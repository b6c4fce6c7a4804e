"""The composer service: stage 1's verdict filter and trace assembly (Algorithm 1) behind gRPC.

`Compose` turns the graded samples of a batch of problems into silver traces with
`skillfactory.compose` and answers the traces and a summary. With `output_uri` set it also writes
the SFT JSONL there, the way stage 1 writes `sft.jsonl` (`dump_record` lines, replaced whole
through a temporary file and a rename), and answers the `file://` URI of what it wrote. A trace
carries every field of its SFT record and the summary every count of the library's, so a client
(`skillfactory.serving.composer_client`) rebuilds both exactly.

- A problem without samples or without a correct sample yields no trace; it is counted in the
  summary and never fails the batch.
- A reflection's verdict is the message's `verdict` when set; when it is VERDICT_UNSPECIFIED the
  verdict is parsed from the reflection text (and a missing or odd one drops the reflection).
- `output_uri` is a path (relative ones are under the data root) or a `file://` URI; it must lie
  inside the server's data root, symlinks resolved, or the call gets INVALID_ARGUMENT naming
  `output_uri`. A server without a data root refuses every `output_uri`.
- An unknown `variant` or a negative `max_samples_per_trace` gets INVALID_ARGUMENT naming the field;
  empty / 0 mean the library defaults. Request size is bounded by `ServingConfig.max_message_mb`.

Series added to the server's registry:

- `skillfactory_composer_requests_total` — Compose calls answered;
- `skillfactory_composer_problems_total` / `..._problems_without_correct_total` — problems composed;
- `skillfactory_composer_traces_composed_total` — traces answered (and written);
- `skillfactory_composer_pairs_dropped_total{reason}` — reflections the verdict filter dropped
  (`mismatch`, `no_verdict`, `malformed`);
- `skillfactory_composer_compose_seconds` — histogram of the time one request takes.
"""

from __future__ import annotations

import errno
import logging
import time
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from skillfactory.compose import (
    DEFAULT_MAX_SAMPLES_PER_TRACE,
    DEFAULT_VARIANT,
    VARIANTS,
    ComposeOptions,
    ComposeSummary,
    compose,
    dump_record,
)
from skillfactory.files import write_text_atomically
from skillfactory.serving.logs import bind_run_id
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.v1 import composer_pb2, composer_pb2_grpc
from skillfactory.wire.messages import problem_samples_from_proto, summary_to_proto, trace_to_proto

log = logging.getLogger(__name__)

SERVICE_NAME = "skillfactory.v1.Composer"
"""Fully qualified service name, as the health service reports it."""

FILE_SCHEME = "file://"

PATH_ERRORS = (errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EEXIST)
"""Write errors that come from the `output_uri` asked for (INVALID_ARGUMENT), not the store."""

SECONDS_BUCKETS = (0.005, 0.02, 0.1, 0.5, 2.0, 10.0, 60.0, 300.0)


class InvalidRequest(ValueError):
    """A request that cannot be served as asked (answered INVALID_ARGUMENT); the message starts
    with the offending field."""


class ComposerMetrics:
    """Composer-specific series in a server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "skillfactory_composer_requests", "Compose calls answered.", registry=registry
        )
        self.problems = Counter(
            "skillfactory_composer_problems", "Problems composed.", registry=registry
        )
        self.problems_without_correct = Counter(
            "skillfactory_composer_problems_without_correct",
            "Problems with no correct sample (they yield no trace).",
            registry=registry,
        )
        self.traces = Counter(
            "skillfactory_composer_traces_composed", "Silver traces composed.", registry=registry
        )
        self.pairs_dropped = Counter(
            "skillfactory_composer_pairs_dropped",
            "Reflections the verdict filter dropped, by reason.",
            ("reason",),
            registry=registry,
        )
        self.seconds = Histogram(
            "skillfactory_composer_compose_seconds",
            "Seconds one Compose request takes (filter, assembly and the write).",
            buckets=SECONDS_BUCKETS,
            registry=registry,
        )

    def record(self, summary: ComposeSummary, seconds: float) -> None:
        self.requests.inc()
        self.problems.inc(summary.problems_in)
        self.problems_without_correct.inc(summary.problems_without_correct)
        self.traces.inc(summary.traces_out)
        for counts in (summary.filter.correct, summary.filter.incorrect):
            self.pairs_dropped.labels("mismatch").inc(counts.dropped_mismatch)
            self.pairs_dropped.labels("no_verdict").inc(counts.dropped_no_verdict)
            self.pairs_dropped.labels("malformed").inc(counts.dropped_malformed)
        self.seconds.observe(seconds)


# ---- requests ----------------------------------------------------------------------------------


def compose_options(request: composer_pb2.ComposeRequest) -> ComposeOptions:
    """The library's options; empty variant and 0 L_max mean the defaults."""
    variant = request.variant or DEFAULT_VARIANT
    if variant not in VARIANTS:
        raise InvalidRequest(f"variant: unknown {variant!r}; allowed: {', '.join(VARIANTS)}")
    if request.max_samples_per_trace < 0:
        raise InvalidRequest(
            f"max_samples_per_trace: must be ≥ 1 (0 for the default), got {request.max_samples_per_trace}"
        )
    limit = request.max_samples_per_trace or DEFAULT_MAX_SAMPLES_PER_TRACE
    return ComposeOptions(variant=variant, seed=request.seed, max_samples_per_trace=limit)


# ---- the shared store -----------------------------------------------------------------------------


def output_path(uri: str, data_root: Path | None) -> Path:
    """The file `uri` names, checked to lie inside `data_root` (symlinks resolved).

    Accepts a path (relative ones are taken under the root) or a `file://` URI; raises
    `InvalidRequest` naming `output_uri` otherwise.
    """
    if data_root is None:
        raise InvalidRequest("output_uri: this composer has no data root, so it writes nothing")
    raw = uri[len(FILE_SCHEME) :] if uri.startswith(FILE_SCHEME) else uri
    if "://" in raw or "\x00" in raw:
        raise InvalidRequest(f"output_uri: {uri!r} is not a local path or a file:// URI")
    root = data_root.resolve()
    try:  # a name too long, a loop of symlinks: the caller's path, not the server's fault
        path = (root / raw).resolve()
        is_dir = path.is_dir()
    except (OSError, ValueError, RuntimeError) as error:
        raise InvalidRequest(f"output_uri: {uri!r} is not a usable path: {error}") from None
    if path == root or not path.is_relative_to(root):
        raise InvalidRequest(f"output_uri: {uri!r} is outside the data root {str(root)!r}")
    if is_dir:
        raise InvalidRequest(f"output_uri: {uri!r} is a directory, not a file")
    return path


def write_dataset(path: Path, records: list[dict[str, Any]]) -> str:
    """Write the SFT JSONL as stage 1 does (whole or not at all); returns its `file://` URI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, "".join(dump_record(record) + "\n" for record in records))
    return FILE_SCHEME + str(path)


# ---- the service ----------------------------------------------------------------------------------


class ComposerServicer(composer_pb2_grpc.ComposerServicer):
    """`Composer` over `skillfactory.compose`."""

    def __init__(
        self,
        data_root: Path | None,
        registry: CollectorRegistry | None = None,
        max_response_bytes: int | None = None,
    ) -> None:
        self.data_root = data_root
        self.metrics = ComposerMetrics(registry) if registry is not None else None
        self.max_response_bytes = max_response_bytes

    def compose(self, request: composer_pb2.ComposeRequest) -> composer_pb2.ComposeResponse:
        """The traces and summary of `request`, written to its `output_uri` when set."""
        start = time.perf_counter()
        options = compose_options(request)
        path = output_path(request.output_uri, self.data_root) if request.output_uri else None
        items = [problem_samples_from_proto(message) for message in request.problems]
        summary = options.new_summary()
        records = list(compose(items, options, summary))
        response = composer_pb2.ComposeResponse(
            traces=[trace_to_proto(record) for record in records],
            summary=summary_to_proto(summary),
        )
        if path is not None:
            try:
                response.output_uri = write_dataset(path, records)
            except OSError as error:
                if error.errno not in PATH_ERRORS:
                    raise  # the store's fault (full, read-only): INTERNAL
                raise InvalidRequest(  # a file where a folder is needed, a name too long, …
                    f"output_uri: cannot write {request.output_uri!r}: {error}"
                ) from None
        seconds = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.record(summary, seconds)
        log.info(
            "composed",
            extra={
                "problems": summary.problems_in,
                "problems_without_correct": summary.problems_without_correct,
                "traces": summary.traces_out,
                "variant": options.variant,
                "output_uri": response.output_uri or None,
                "seconds": round(seconds, 3),
            },
        )
        return response

    def Compose(  # noqa: N802 (the RPC's name)
        self, request: composer_pb2.ComposeRequest, context: grpc.ServicerContext
    ) -> composer_pb2.ComposeResponse:
        with bind_run_id(request.run_id or None):
            try:
                response = self.compose(request)
            except InvalidRequest as error:
                log.info("compose refused", extra={"error": str(error)})
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
                raise  # unreachable: abort raises
            except OSError as error:
                log.error("cannot write the dataset", extra={"error": str(error)})
                context.abort(grpc.StatusCode.INTERNAL, f"cannot write the dataset: {error}")
                raise  # unreachable: abort raises
            size = response.ByteSize()
            if self.max_response_bytes is not None and size > self.max_response_bytes:
                written = (
                    response.output_uri and f"; the dataset was written to {response.output_uri}"
                )
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"response of {size} bytes exceeds the {self.max_response_bytes}-byte limit"
                    f"{written}; send fewer problems per request",
                )
            return response

    def add_to(self, server: grpc.Server) -> None:
        composer_pb2_grpc.add_ComposerServicer_to_server(self, server)


def setup_composer_server(config: ServingConfig, data_root: Path | None) -> ServiceServer:
    """A composer server (not started yet) writing datasets under `data_root` (None: never)."""
    server = ServiceServer("composer", config)
    servicer = ComposerServicer(data_root, server.metrics.registry, config.max_message_bytes)
    server.add_service(SERVICE_NAME, servicer.add_to)
    return server
