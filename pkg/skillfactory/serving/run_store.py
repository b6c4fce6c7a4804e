"""Persisted state of the learner's runs: one folder per run under a state directory.

    <state_dir>/runs/<run_id>/status.json   id, name, spec, state, stage, stages, error, submitter,
                                            times
    <state_dir>/runs/<run_id>/events.jsonl  every event of the run, one JSON object a line

`status.json` is rewritten atomically (temp file + rename) on every change; events are appended
and flushed, so a learner killed at any point restarts with every run it had and the events up to
the last line written (a torn last line is skipped). Times are UNIX seconds.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skillfactory.files import write_json_atomically

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "PENDING",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "CANCELLED",
)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
STATES = (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED)


@dataclass
class StageRecord:
    """One stage of a run."""

    state: str = PENDING
    progress: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None


@dataclass
class RunEventRecord:
    """One event: `kind` is "state" (value: a run state), "message" (value: text) or "metrics"
    (value: {name: number}, with `step`); `data` keeps the pipeline's event as it was."""

    sequence: int
    time: float
    stage: str
    kind: str
    value: Any
    step: int = 0
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunRecord:
    """A run as the learner API reports it."""

    run_id: str
    name: str
    spec: dict[str, Any]
    stages: dict[str, StageRecord]
    state: str = PENDING
    current_stage: str = ""
    policy_version: int = 0
    message: str = ""
    submitter: str = ""
    """Name of the caller that submitted it ('' without auth); it and an admin may cancel it."""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    events: list[RunEventRecord] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def status_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["events"]
        return data

    @classmethod
    def from_status_dict(cls, data: dict[str, Any]) -> RunRecord:
        stages = {name: StageRecord(**stage) for name, stage in data.pop("stages").items()}
        data.pop("events", None)
        return cls(stages=stages, **data)


class RunStore:
    """Reads and writes run records under `state_dir`."""

    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir) / "runs"
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, run_id: str) -> Path:
        return self.root / run_id

    def save_status(self, record: RunRecord) -> None:
        """Atomically rewrite the run's status (not its events)."""
        folder = self._dir(record.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomically(folder / "status.json", record.status_dict(), indent=1, durable=True)

    def append_event(self, run_id: str, event: RunEventRecord) -> None:
        folder = self._dir(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "events.jsonl").open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(asdict(event), default=str) + "\n")

    def load_all(self) -> list[RunRecord]:
        """Every stored run with its events, oldest first; unreadable runs are skipped."""
        records: list[RunRecord] = []
        for folder in sorted(self.root.iterdir()):
            try:
                data = json.loads((folder / "status.json").read_text(encoding="utf-8"))
                record = RunRecord.from_status_dict(data)
            except (OSError, ValueError, TypeError, KeyError):
                continue
            record.events = list(_read_events(folder / "events.jsonl"))
            records.append(record)
        records.sort(key=lambda r: r.created_at)
        return records


def _read_events(path: Path) -> list[RunEventRecord]:
    events: list[RunEventRecord] = []
    if not path.exists():
        return events
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(RunEventRecord(**json.loads(line)))
        except (ValueError, TypeError):
            continue  # a line torn by a kill
    return events
