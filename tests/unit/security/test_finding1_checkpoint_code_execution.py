"""Issue 15, finding 1: code execution from a checkpoint. A pickle planted in a checkpoint folder
(the shared volume) must not run when the learner resumes from it, and `latest` may only name a
checkpoint folder inside the checkpoint root."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from skillfactory.runspec import GRPOSpec
from skillfactory.train.learner import BadCheckpoint, GRPOLearner, latest_checkpoint


class Payload:
    """Writes a marker file when unpickled: what an attacker's pickle would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def learner(tiny_model_dir: Path) -> GRPOLearner:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    return GRPOLearner(model, GRPOSpec(prompts_per_step=256, mini_batch_size=256), pad_token_id=0)


@pytest.mark.parametrize("planted", ["optimizer.pt", "rng.pt"])
def test_a_pickle_planted_in_a_checkpoint_does_not_run(
    tiny_model_dir: Path, tmp_path: Path, planted: str
) -> None:
    folder = learner(tiny_model_dir).save_checkpoint(tmp_path / "checkpoints")
    marker = tmp_path / "pwned"
    (folder / planted).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(pickle.UnpicklingError):
        learner(tiny_model_dir).load_checkpoint(folder)
    assert not marker.exists()


def test_a_checkpoint_still_round_trips_rng_and_optimizer(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import random

    first = learner(tiny_model_dir)
    random.seed(7)
    folder = first.save_checkpoint(tmp_path / "checkpoints")
    expected = random.random()
    random.seed(99)
    learner(tiny_model_dir).load_checkpoint(folder)
    assert random.random() == expected


@pytest.mark.parametrize(
    "pointer", ["../../elsewhere/step-000001", "/etc/step-000001", "step-1; rm", "."]
)
def test_latest_may_only_name_a_checkpoint_folder_inside_the_root(
    tmp_path: Path, pointer: str
) -> None:
    root = tmp_path / "checkpoints"
    root.mkdir()
    (root / "latest").write_text(pointer)
    with pytest.raises(BadCheckpoint):
        latest_checkpoint(root)


def test_latest_may_not_follow_a_link_out(tmp_path: Path) -> None:
    root, outside = tmp_path / "checkpoints", tmp_path / "outside" / "step-000001"
    outside.mkdir(parents=True)
    (outside / "learner.json").write_text("{}")
    root.mkdir()
    (root / "step-000001").symlink_to(outside)
    (root / "latest").write_text("step-000001")
    with pytest.raises(BadCheckpoint):
        latest_checkpoint(root)
