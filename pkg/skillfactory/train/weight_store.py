"""The weight store: each published policy version as a folder of safetensors on a shared volume.

The learner publishes version `v` to `<root>/v<v>/` (written to a staging folder, then renamed, so
a reader never sees half a version) and announces it with a `skillfactory.v1.WeightUpdate`
notice: run id, version, the folder's URI and a SHA-256 over its files, which a rollout service
checks before loading (`verify`) to catch a torn or stale read. Engines load the folder with
`Engine.load_weights(path, version)`. Only the newest `keep` versions stay on disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from skillfactory.v1 import data_pb2

if TYPE_CHECKING:
    from torch import Tensor

WEIGHTS_FILE = "model.safetensors"


class TornWeights(RuntimeError):
    """A weight folder whose checksum does not match its notice."""


def folder_checksum(folder: Path) -> str:
    """SHA-256 over the names and bytes of the safetensors files of a folder, in name order."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(path.name.encode())
        with path.open("rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class WeightStore:
    """Published policy versions under one root folder."""

    def __init__(self, root: str | Path, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.root = Path(root)
        self.keep = keep

    def folder(self, version: int) -> Path:
        """Where version `version` lives."""
        return self.root / f"v{version:06d}"

    def publish(
        self, weights: Mapping[str, Tensor], version: int, run_id: str = ""
    ) -> data_pb2.WeightUpdate:
        """Write `weights` as version `version` and return the notice to send to engines."""
        from safetensors.torch import save_file

        final = self.folder(version)
        staging = self.root / f".v{version:06d}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        tensors = {name: t.detach().contiguous().cpu() for name, t in weights.items()}
        save_file(_untied(tensors), str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        checksum = folder_checksum(staging)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        self._prune()
        return data_pb2.WeightUpdate(
            run_id=run_id, version=version, uri=final.resolve().as_uri(), checksum=checksum
        )

    def versions(self) -> list[int]:
        """Published versions on disk, oldest first."""
        return sorted(int(p.name[1:]) for p in self.root.glob("v*") if p.name[1:].isdigit())

    def latest(self) -> int | None:
        """The newest published version, if any."""
        versions = self.versions()
        return versions[-1] if versions else None

    def _prune(self) -> None:
        for version in self.versions()[: -self.keep]:
            shutil.rmtree(self.folder(version), ignore_errors=True)


def verify(update: data_pb2.WeightUpdate) -> Path:
    """The local folder a notice points at, after checking its checksum (`TornWeights` if not)."""
    uri = update.uri
    folder = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
    if not folder.is_dir():
        raise TornWeights(f"version {update.version}: {folder} does not exist (pruned?)")
    actual = folder_checksum(folder)
    if actual != update.checksum:
        raise TornWeights(f"version {update.version}: checksum {actual} != {update.checksum}")
    return folder


def _untied(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """safetensors refuses tensors that share memory (tied embeddings): keep the first name."""
    seen: set[int] = set()
    kept = {}
    for name, tensor in tensors.items():
        pointer = tensor.data_ptr()
        if pointer in seen and tensor.numel() > 0:
            continue
        seen.add(pointer)
        kept[name] = tensor
    return kept
