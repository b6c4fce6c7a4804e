"""A client of the composer service with the shape of `skillfactory.compose.compose`.

`ComposerClient(address, token).compose(items, options, summary)` sends the problems' graded
samples to the service in `Compose` requests, accounts for every answer in `summary` and returns
the SFT records. The service composes with the library and answers every field of a record and of
the summary, so the records (key order included) and the summary equal those of composing in
process: stage 1 given `compose=client.compose` writes the same `sft.jsonl` and `summary.json`.

- No `output_uri` is sent: the caller writes the records itself, as in process (stage 1 keeps its
  one writer, and the composer's data root need not hold the run's folder).
- Problems go in requests of at most about `batch_bytes` each (a larger problem alone). Traces
  depend only on the seed and each problem (`skillfactory.compose.composer`), and the summary is a
  sum over problems, so the split changes nothing.
- Samples are sent in their order; the service numbers them 0, 1, … as `parse_samples_record` does.
- A failed call raises `ComposerError` naming the address (and saying so when it is unreachable).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc

from skillfactory.compose import ComposeOptions, ComposeSummary, ProblemSamples
from skillfactory.serving.auth import bearer_metadata
from skillfactory.serving.channels import open_channel
from skillfactory.serving.logs import current_run_id
from skillfactory.v1 import composer_pb2, composer_pb2_grpc, data_pb2
from skillfactory.wire.messages import add_summary, problem_samples_to_proto, record_from_trace

log = logging.getLogger(__name__)


class ComposerError(RuntimeError):
    """A Compose call that failed; the message names the service's address."""


# ---- the client -----------------------------------------------------------------------------------


class ComposerClient:
    """Composes with a remote composer service; `compose` can stand in for the library's."""

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        tls_ca: Path | None = None,
        timeout_s: float = 300.0,
        max_message_mb: float = 64.0,
        batch_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        size = int(max_message_mb * 1024 * 1024)
        options = [
            ("grpc.max_send_message_length", size),
            ("grpc.max_receive_message_length", size),
        ]
        self.address = address
        self.channel = open_channel(address, tls_ca, options)
        self.stub = composer_pb2_grpc.ComposerStub(self.channel)
        self.metadata = bearer_metadata(token) if token else ()
        self.timeout_s = timeout_s
        self.batch_bytes = batch_bytes

    def compose(
        self, items: Iterable[ProblemSamples], options: ComposeOptions, summary: ComposeSummary
    ) -> list[dict[str, Any]]:
        """SFT records of `items` in input order, accounting for each problem in `summary` (as
        `skillfactory.compose.compose` does)."""
        records: list[dict[str, Any]] = []
        for batch in self._batches(problem_samples_to_proto(item) for item in items):
            request = composer_pb2.ComposeRequest(
                run_id=current_run_id() or "",
                problems=batch,
                seed=options.seed,
                variant=options.variant,
                max_samples_per_trace=options.max_samples_per_trace,
            )
            response = self._call(request)
            add_summary(summary, response.summary)
            records += (record_from_trace(trace) for trace in response.traces)
        log.info(
            "composed remotely",
            extra={
                "composer": self.address,
                "problems": summary.problems_in,
                "traces": len(records),
            },
        )
        return records

    def _batches(
        self, messages: Iterable[data_pb2.ProblemSamples]
    ) -> Iterator[list[data_pb2.ProblemSamples]]:
        batch: list[data_pb2.ProblemSamples] = []
        size = 0
        for message in messages:
            bytes_ = message.ByteSize()
            if batch and size + bytes_ > self.batch_bytes:
                yield batch
                batch, size = [], 0
            batch.append(message)
            size += bytes_
        if batch:
            yield batch

    def _call(self, request: composer_pb2.ComposeRequest) -> composer_pb2.ComposeResponse:
        try:
            response: composer_pb2.ComposeResponse = self.stub.Compose(
                request, metadata=self.metadata, timeout=self.timeout_s
            )
        except grpc.RpcError as error:
            raise ComposerError(_describe(error, self.address)) from None
        if len(response.traces) != response.summary.traces_out:
            raise ComposerError(
                f"composer service at {self.address} answered {len(response.traces)} traces "
                f"but counted {response.summary.traces_out}"
            )
        return response

    def close(self) -> None:
        self.channel.close()


def _describe(error: grpc.RpcError, address: str) -> str:
    code = error.code() if isinstance(error, grpc.Call) else None
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"composer service at {address} is unreachable: {details}"
    name = code.name if code is not None else "an error"
    return f"composer service at {address} answered {name}: {details}"
