"""Policy-version staleness: the drop filter on the learner side and admission pacing on the
dispatcher side. Pure Python, no torch, so a dispatcher can import it anywhere.

Every group carries the policy version its completions were sampled with. The learner, about to
train policy version `v` into `v + 1`, computes `staleness = v − group version`:

- `StalenessFilter` drops groups whose staleness exceeds `max_staleness` and counts them;
- `AdmissionController` paces prompt admission so that few groups ever get that stale:

      accepted + in_flight ≤ (max_staleness + version + 1) × batch

  where `batch` is the prompts (groups) per optimizer step, `accepted` counts groups the learner
  has accepted for training since the run began, and `in_flight` counts admitted prompts whose
  group is not done yet. Pacing, rather than dropping, avoids biasing training toward short
  rollouts (which finish first). With `max_staleness = 0` exactly one step's batch is admitted per
  version: synchronous on-policy GRPO.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


def group_staleness(learner_version: int, policy_version: int) -> int:
    """How many versions a group lags the learner; an error if it comes from a future version."""
    lag = learner_version - policy_version
    if lag < 0:
        raise ValueError(f"group of policy version {policy_version} > learner {learner_version}")
    return lag


@dataclass
class StalenessFilter:
    """Keeps groups with staleness ≤ `max_staleness`, counting what it keeps and drops."""

    max_staleness: int
    """Oldest lag admitted (0: only groups of the learner's current version)."""
    kept: int = 0
    """Groups kept so far."""
    dropped: int = 0
    """Groups dropped as too stale so far."""

    def __post_init__(self) -> None:
        if self.max_staleness < 0:
            raise ValueError("max_staleness must be non-negative")

    def keep(self, learner_version: int, policy_version: int) -> bool:
        """Whether a group of `policy_version` may train the learner at `learner_version`."""
        fresh = group_staleness(learner_version, policy_version) <= self.max_staleness
        if fresh:
            self.kept += 1
        else:
            self.dropped += 1
        return fresh


class AdmissionController:
    """Thread-safe pacing of prompt admission by policy version (see the module docstring).

    Semantics, with `capacity = (max_staleness + version + 1) × batch − accepted − in_flight`:

    - `try_admit(n)` admits `min(n, capacity)` prompts (0 when capacity ≤ 0) without waiting;
      the admitted prompts count as in flight;
    - `admit_blocking(n, timeout)` waits until capacity > 0 (or timeout, or `close()`), then
      admits like `try_admit`; returns 0 on timeout or after `close()`;
    - `on_group_done(accepted)` ends one in-flight prompt: an accepted group moves to `accepted`;
      a rejected one (too stale, zero variance, failed) frees its slot, so a replacement is
      admitted at the current version;
    - `on_version(v)` records the learner's new policy version (never goes back), raising the
      bound by `batch` per version.

    Resuming a run passes the saved `version` and `accepted`; nothing is in flight then. `limit`
    caps `accepted + in_flight` for the whole run (`steps × batch`), so that no prompt is sampled
    for a version that will never be trained.
    """

    def __init__(
        self,
        batch: int,
        max_staleness: int,
        *,
        version: int = 0,
        accepted: int = 0,
        limit: int | None = None,
    ):
        if batch < 1 or max_staleness < 0 or version < 0 or accepted < 0:
            raise ValueError("need batch ≥ 1 and non-negative max_staleness, version, accepted")
        self.batch = batch
        self.max_staleness = max_staleness
        self.limit = limit
        self._version = version
        self._accepted = accepted
        self._in_flight = 0
        self._closed = False
        self._changed = threading.Condition()

    @property
    def version(self) -> int:
        """The learner's latest policy version."""
        return self._version

    @property
    def accepted(self) -> int:
        """Groups accepted for training since the run began."""
        return self._accepted

    @property
    def in_flight(self) -> int:
        """Admitted prompts whose group is not done."""
        return self._in_flight

    @property
    def capacity(self) -> int:
        """Prompts that may be admitted now (may be negative after a resume with fewer versions)."""
        with self._changed:
            return self._capacity()

    def _capacity(self) -> int:
        bound = (self.max_staleness + self._version + 1) * self.batch
        if self.limit is not None:
            bound = min(bound, self.limit)
        return bound - self._accepted - self._in_flight

    def _admit(self, n: int) -> int:
        admitted = max(0, min(n, self._capacity()))
        self._in_flight += admitted
        return admitted

    def try_admit(self, n: int) -> int:
        """Admit up to `n` prompts now; returns how many were admitted (0 after `close()`)."""
        if n < 0:
            raise ValueError("n must be non-negative")
        with self._changed:
            return 0 if self._closed else self._admit(n)

    def admit_blocking(self, n: int, timeout: float | None = None) -> int:
        """Wait until at least one prompt may be admitted, then admit up to `n` of them.

        Returns 0 when `timeout` seconds pass first or the controller is closed.
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._closed and self._capacity() <= 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return 0
                self._changed.wait(remaining)
            return 0 if self._closed else self._admit(n)

    def on_group_done(self, accepted: bool) -> None:
        """One admitted prompt's group finished: accepted for training, or rejected (slot freed)."""
        with self._changed:
            if self._in_flight == 0:
                raise RuntimeError("on_group_done without an admitted prompt in flight")
            self._in_flight -= 1
            if accepted:
                self._accepted += 1
            self._changed.notify_all()

    def on_version(self, version: int) -> None:
        """The learner published `version`; an older or equal version changes nothing."""
        with self._changed:
            if version > self._version:
                self._version = version
                self._changed.notify_all()

    def close(self) -> None:
        """Stop admitting: blocked and later admissions return 0."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
