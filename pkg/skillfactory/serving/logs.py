"""Structured logs: one JSON object per line with `ts`, `level`, `service`, `msg` and `run_id`.

`setup_logging("reward")` points the root logger at a JSON handler; `run_id` comes from a
`extra={"run_id": ...}` on the call or, when a request handler knows it, from `bind_run_id`, and is
left out when unknown. Other `extra` fields are added to the object as they are.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

_RUN_ID: ContextVar[str | None] = ContextVar("skillfactory_run_id", default=None)

_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "run_id"}
)
"""LogRecord attributes that are not `extra` fields."""


@contextmanager
def bind_run_id(run_id: str | None) -> Iterator[None]:
    """Tag every log line written inside the block (in this thread or task) with `run_id`."""
    token = _RUN_ID.set(run_id or None)
    try:
        yield
    finally:
        _RUN_ID.reset(token)


def current_run_id() -> str | None:
    """The run id `bind_run_id` bound in this thread or task (None outside such a block)."""
    return _RUN_ID.get()


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "msg": record.getMessage(),
            "logger": record.name,
        }
        run_id = getattr(record, "run_id", None) or _RUN_ID.get()
        if run_id:
            entry["run_id"] = run_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(service: str, level: str = "info", stream: IO[str] | None = None) -> None:
    """Send every log record to `stream` (stderr by default) as JSON lines tagged with `service`."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
