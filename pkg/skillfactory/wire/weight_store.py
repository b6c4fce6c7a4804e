"""The weight store: each published policy version as a folder of safetensors on a shared volume.

The learner publishes version `v` to `<root>/v<v>/` (written to a staging folder, then renamed, so
a reader never sees half a version), in the dtype the engines run (bf16 on GPUs), hashed in
memory while serialized and written once; `WeightPublisher` does it on a background thread, off
the learner's critical path, one version in flight at a time. The folder holds the safetensors file and `checksum.sha256`,
the SHA-256 the learner computed over its files; `publish` also answers it as a
`skillfactory.v1.WeightUpdate` notice (run id, version, the folder's URI and the checksum) for the
`UpdateWeights` RPC. Readers check the checksum before loading — `verify(notice)` against the
notice's, `WeightStore.verified(version)` against the one in the folder — to catch a torn, stale or
tampered read. Engines load the folder with `Engine.load_weights(path, version)`. Only the newest
`keep` versions stay on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from skillfactory.v1 import data_pb2

if TYPE_CHECKING:
    import torch
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
        self,
        weights: Mapping[str, Tensor],
        version: int,
        run_id: str = "",
        dtype: torch.dtype | None = None,
    ) -> data_pb2.WeightUpdate:
        """Write `weights` (cast to `dtype`, the engines', when given) as version `version` and
        return the notice to send to engines. The file is serialized in memory and hashed there,
        then written once: nothing is read back."""
        final = self.folder(version)
        staging = self.root / f".v{version:06d}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        tensors = host_copy(weights, dtype)
        checksum = write_safetensors(staging / WEIGHTS_FILE, tensors, {"format": "pt"})
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


SAFETENSORS_DTYPES = {
    "torch.float32": "F32",
    "torch.bfloat16": "BF16",
    "torch.float16": "F16",
    "torch.float64": "F64",
    "torch.int64": "I64",
    "torch.int32": "I32",
    "torch.int16": "I16",
    "torch.int8": "I8",
    "torch.uint8": "U8",
    "torch.bool": "BOOL",
}


def write_safetensors(path: Path, tensors: Mapping[str, Tensor], metadata: dict[str, str]) -> str:
    """Write CPU tensors as a safetensors file, hashing what is written as it goes (the header,
    then each tensor's bytes, straight from its memory): returns the folder checksum a reader
    computes (`folder_checksum`) without reading the file back."""
    import torch  # heavy: only writers need it, and they hold tensors already

    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        kind = SAFETENSORS_DTYPES[str(tensor.dtype)]
        header[name] = {
            "dtype": kind,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    digest = hashlib.sha256(path.name.encode())
    with path.open("wb") as sink:
        for block in (len(encoded).to_bytes(8, "little"), encoded):
            digest.update(block)
            sink.write(block)
        for tensor in tensors.values():
            view = tensor.contiguous().view(-1).view(torch.uint8).numpy().data
            digest.update(view)  # hashlib and the write release the GIL on large buffers
            sink.write(view)
    return digest.hexdigest()


def host_copy(weights: Mapping[str, Tensor], dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """The tensors on the CPU, in `dtype` when given, in memory of their own (the learner may
    change its weights right after); tied tensors (sharing memory, as tied embeddings do) once,
    under their first name, as safetensors requires."""
    copies = {}
    for name, tensor in _untied(dict(weights)).items():
        moved = tensor.detach().to("cpu", dtype=dtype or tensor.dtype)
        copies[name] = (
            moved.clone() if moved.data_ptr() == tensor.data_ptr() else moved
        ).contiguous()
    return copies


class WeightPublisher:
    """Publishes versions off the learner's critical path: `submit` copies the weights (to the
    CPU, in the engines' dtype) and returns; a background thread serializes, hashes and writes
    them. At most one version is in flight: a `submit` while the previous one is still being
    written waits for it first. `flush` waits for the last one; an error of the thread is
    raised by the next call."""

    def __init__(
        self, store: WeightStore, dtype: torch.dtype | None = None, run_id: str = ""
    ) -> None:
        self.store = store
        self.dtype = dtype
        self.run_id = run_id
        self.last: data_pb2.WeightUpdate | None = None
        """The notice of the newest version written."""
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, weights: Mapping[str, Tensor], version: int) -> None:
        """Hand `weights` over as version `version` (returns once they are copied)."""
        self.flush()
        copies = host_copy(weights, self.dtype)
        self._thread = threading.Thread(
            target=self._write, args=(copies, version), name="weight-publisher", daemon=True
        )
        self._thread.start()

    def _write(self, copies: dict[str, Tensor], version: int) -> None:
        try:
            self.last = self.store.publish(copies, version, self.run_id)
        except BaseException as error:  # raised on the learner's next call
            self._error = error

    def flush(self) -> data_pb2.WeightUpdate | None:
        """Wait for the version in flight; returns the newest notice."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError("publishing weights failed") from error
        return self.last


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
