"""The weight store: each published policy version as a folder of safetensors on a shared volume.

The learner publishes version `v` to `<root>/v<v>/` (written to a staging folder, then renamed, so
a reader never sees half a version). The folder holds the safetensors file and `checksum.sha256`,
the SHA-256 the learner computed over its files; `publish` also answers it as a
`skillfactory.v1.WeightUpdate` notice (run id, version, the folder's URI and the checksum) for the
`UpdateWeights` RPC. Readers check the checksum before loading — `verify(notice)` against the
notice's, `WeightStore.verified(version)` against the one in the folder — to catch a torn, stale or
tampered read. Engines load the folder with `Engine.load_weights(path, version)`. Only the newest
`keep` versions stay on disk.
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
CHECKSUM_FILE = "checksum.sha256"
"""The learner's checksum of a version's safetensors files, written beside them."""


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
        from safetensors.torch import save_file  # heavy: only writers and loaders need it

        final = self.folder(version)
        staging = self.root / f".v{version:06d}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        tensors = {name: t.detach().contiguous().cpu() for name, t in weights.items()}
        save_file(_untied(tensors), str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        checksum = folder_checksum(staging)
        (staging / CHECKSUM_FILE).write_text(checksum + "\n")
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

    def verified(self, version: int) -> Path:
        """The folder of `version` after checking its files against the checksum the learner
        wrote beside them (`TornWeights` when missing, pruned or different)."""
        folder = self.folder(version)
        try:
            expected = (folder / CHECKSUM_FILE).read_text().strip()
        except OSError:
            raise TornWeights(f"version {version}: no checksum in {folder} (pruned?)") from None
        return _checked(folder, version, expected)

    def _prune(self) -> None:
        for version in self.versions()[: -self.keep]:
            shutil.rmtree(self.folder(version), ignore_errors=True)


def verify(update: data_pb2.WeightUpdate) -> Path:
    """The local folder a notice points at, after checking its checksum (`TornWeights` if not)."""
    uri = update.uri
    folder = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
    return _checked(folder, update.version, update.checksum)


def _checked(folder: Path, version: int, expected: str) -> Path:
    if not folder.is_dir():
        raise TornWeights(f"version {version}: {folder} does not exist (pruned?)")
    actual = folder_checksum(folder)
    if actual != expected:
        raise TornWeights(f"version {version}: checksum {actual} != {expected}")
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
