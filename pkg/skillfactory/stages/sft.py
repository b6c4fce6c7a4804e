"""Stage 2 as a pipeline stage: SFT on the silver chats (or a given chat dataset), reused when a
previous run of it finished, with every rank of a `torchrun` learner training its share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skillfactory.models.registry import is_model_folder
from skillfactory.run_folder import run_dir
from skillfactory.runspec import RunSpec
from skillfactory.train.ranks import RankGroup, leading
from skillfactory.train.sft import MODEL_DIR, RESULT_FILE, run_sft

SFT_DIR = "sft"


def sft_folder(spec: RunSpec) -> Path:
    """Where stage 2 of this run writes."""
    return run_dir(spec) / SFT_DIR


class SFTStage:
    """SFT of `base_model` on `dataset` (a chat JSONL file or a Hub id `hf:…`), writing under
    `<run>/sft/`."""

    def __init__(
        self,
        spec: RunSpec,
        base_model: str,
        dataset: Path | str,
        *,
        ranks: RankGroup | None = None,
    ) -> None:
        self.spec = spec
        self.base_model = base_model
        self.dataset = dataset
        self.ranks = leading(ranks)
        self.out = sft_folder(spec)

    def model_dir(self) -> Path:
        """The fine-tuned model folder."""
        return self.out / MODEL_DIR

    def is_finished(self) -> bool:
        """Whether a previous run of this stage wrote its result and model."""
        return (self.out / RESULT_FILE).exists() and is_model_folder(self.model_dir())

    def run(self) -> dict[str, Any]:
        """Train (every rank of several), or reuse a finished run; returns the result."""
        if self.is_finished():
            result: dict[str, Any] = json.loads((self.out / RESULT_FILE).read_text())
            return {**result, "reused": True}
        arguments = (self.base_model, str(self.dataset), str(self.out), self.spec.seed)
        if self.ranks is not None:
            self.ranks.tell("sft", self.spec.sft.model_dump_json(), *arguments)
        return run_sft(self.spec.sft, *arguments).to_dict()
