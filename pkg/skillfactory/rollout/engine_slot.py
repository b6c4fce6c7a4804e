"""The engine a rollout service samples with: which model it holds, for which learner epoch, and
at which policy version.

A rollout service may start without a model (`skillfactory up` does not know the runs to come):
the first rollout task names the model folder GRPO starts from, and the slot builds its engine on
it. A task of another learner *epoch* (a new run, or the same run after a learner restart, whose
published versions start over) rebuilds the engine from the model, so no weights of an older
epoch survive. Before each engine call the slot loads the newest version in the task's weight
store when it is newer than the engine's (`catch_up`), so a sampler is at most one publish behind;
a version whose files do not match the checksum the learner wrote beside them is not loaded (the
engine keeps serving the version it has).

Callers hold `lock` around `prepare` and the engine call: one engine call or weight load at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from skillfactory.engines.base import Engine
from skillfactory.wire.weight_store import TornWeights, WeightStore

log = logging.getLogger(__name__)

EngineFactory = Callable[[str], Engine]
"""Builds an engine on a model folder (or registered model name)."""


class NoModelLoaded(RuntimeError):
    """The slot has no engine yet: no rollout task or start-up model named one."""


class EngineSlot:
    """One engine, rebuilt per (model, epoch) and caught up to the newest published weights."""

    def __init__(
        self, factory: EngineFactory | None, engine: Engine | None = None, model: str = ""
    ) -> None:
        if factory is None and engine is None:
            raise ValueError("an engine slot needs an engine or a factory to build one")
        self.factory = factory
        self.model = model
        """Model folder the engine was built on ('' when handed a ready engine unnamed)."""
        self.epoch = ""
        """Learner epoch whose weights the engine holds ('' before any rollout task)."""
        self.lock = threading.Lock()
        self.loads = 0
        """Weight versions loaded from weight stores."""
        self._engine = engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise NoModelLoaded(
                "no model loaded yet: start with --model or wait for a rollout task"
            )
        return self._engine

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def prepare(self, model: str, epoch: str, weights_root: str = "") -> Engine:
        """The engine for a task of `epoch` on `model`, with the newest weights of `weights_root`;
        the caller holds `lock`."""
        if self._engine is None or (model and model != self.model) or epoch != self.epoch:
            self._rebuild(model or self.model)
            self.epoch = epoch
        if weights_root:
            self.catch_up(Path(weights_root))
        return self.engine

    def _rebuild(self, model: str) -> None:
        if self.factory is None:
            if model and self.model and model != self.model:
                raise ValueError(f"this rollout serves {self.model!r} and cannot load {model!r}")
            log.warning("no engine factory: keeping the engine as it is for a new epoch")
            return
        if not model:
            raise NoModelLoaded("the rollout task names no model and none is loaded")
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        log.info("building the engine", extra={"model": model})
        self._engine = self.factory(model)
        self.model = model

    def catch_up(self, root: Path) -> int:
        """Load the newest version under `root` if it is newer than the engine's; returns the
        engine's version. A version pruned, half-visible or tampered with is skipped (the next
        call tries the newest again)."""
        engine = self.engine
        store = WeightStore(root)
        latest = store.latest()
        if latest is None or latest <= engine.policy_version:
            return engine.policy_version
        try:
            engine.load_weights(store.verified(latest), latest)
        except (OSError, ValueError, RuntimeError, TornWeights) as error:
            log.warning("cannot load weights yet", extra={"version": latest, "error": str(error)})
        else:
            self.loads += 1
        return engine.policy_version

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
