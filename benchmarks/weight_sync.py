"""Weight sync on the learner's critical path: seconds and bytes per published version, the way
the learner published before issue 14 and the way it publishes now, side by side in one run.

    PYTHONPATH=pkg python3 benchmarks/weight_sync.py [--versions 4] [--json]

A model of SmolLM2-135M's shape is built from its config (random weights, fp32, CPU). Each
version, the learner "trains" (the weights change in place, and a simulated step of
`--step-seconds` follows), then publishes:

- before: `save_file` of the fp32 tensors into a staging folder, a SHA-256 that reads the file
  back, a rename — all on the learner's thread, before the next step can start;
- after: `WeightPublisher.submit` — a copy of the tensors to the CPU in the engines' dtype, then
  the next step starts while a background thread serializes, hashes in memory and writes once;
  a submit that finds the previous version still being written waits for it (counted).

Reported per path: learner critical-path seconds per version (mean), bytes per version, and for
`after` the dtype: fp32 (what CPU engines load) and bf16 (what GPU engines load). The last line
with `--json` is `{"points": [{"path", "dtype", "critical_seconds", "bytes"}, ...],
"speedup_fp32": X, "speedup_bf16": Y}`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from skillfactory.wire.weight_store import (
    CHECKSUM_FILE,
    WEIGHTS_FILE,
    WeightPublisher,
    WeightStore,
    folder_checksum,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_vs_trl import model_config  # noqa: E402


def publish_before(root: Path, weights: dict[str, torch.Tensor], version: int) -> None:
    """The pre-issue-14 publish: fp32 file, re-read for the hash, rename (all synchronous)."""
    from safetensors.torch import save_file

    final, staging = root / f"v{version:06d}", root / f".v{version:06d}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tensors = {n: t.detach().contiguous().cpu() for n, t in weights.items()}
    seen: set[int] = set()
    untied = {}
    for name, tensor in tensors.items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        untied[name] = tensor
    save_file(untied, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
    (staging / CHECKSUM_FILE).write_text(folder_checksum(staging) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)


def train_a_step(model: torch.nn.Module, seconds: float) -> None:
    """The weights change in place; then a simulated step."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.0 + 1e-4)
    time.sleep(seconds)


def run_before(model: torch.nn.Module, root: Path, versions: int, step_s: float) -> dict[str, Any]:
    critical = []
    for version in range(1, versions + 1):
        train_a_step(model, step_s)
        started = time.perf_counter()
        publish_before(root, dict(model.state_dict()), version)
        critical.append(time.perf_counter() - started)
    size = (root / f"v{versions:06d}" / WEIGHTS_FILE).stat().st_size
    return {"path": "before", "dtype": "float32", "critical_seconds": sum(critical) / versions,
            "bytes": size}  # fmt: skip


def run_after(
    model: torch.nn.Module, root: Path, versions: int, step_s: float, dtype: torch.dtype
) -> dict[str, Any]:
    publisher = WeightPublisher(WeightStore(root, keep=2), dtype=dtype)
    critical = []
    for version in range(1, versions + 1):
        train_a_step(model, step_s)
        started = time.perf_counter()
        publisher.submit(dict(model.state_dict()), version)
        critical.append(time.perf_counter() - started)
    notice = publisher.flush()
    assert notice is not None and notice.version == versions
    size = (root / f"v{versions:06d}" / WEIGHTS_FILE).stat().st_size
    name = str(dtype).removeprefix("torch.")
    return {"path": "after", "dtype": name, "critical_seconds": sum(critical) / versions,
            "bytes": size}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=4)
    parser.add_argument("--step-seconds", type=float, default=3.0, help="simulated training step")
    parser.add_argument("--small", action="store_true", help="a tiny shape (smoke test)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    shape = argparse.Namespace(
        shape="smollm2", hidden=None, layers=None, heads=None, kv_heads=None, intermediate=None,
        vocab=None,
    )  # fmt: skip
    if args.small:
        shape.hidden, shape.layers, shape.intermediate, shape.vocab = 64, 2, 128, 1024
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(model_config(shape, 512)).float()
    parameters = sum(p.numel() for p in model.parameters())
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        points.append(run_before(model, Path(tmp) / "before", args.versions, args.step_seconds))
        for dtype in (torch.float32, torch.bfloat16):
            root = Path(tmp) / f"after-{dtype}"
            points.append(run_after(model, root, args.versions, args.step_seconds, dtype))
    before = points[0]["critical_seconds"]
    result = {
        "parameters": parameters,
        "points": points,
        "speedup_fp32": before / points[1]["critical_seconds"],
        "speedup_bf16": before / points[2]["critical_seconds"],
    }
    for point in points:
        print(
            f"{point['path']:>6} {point['dtype']:>8}: {point['critical_seconds']:.3f} s on the "
            f"learner's critical path per version, {point['bytes'] / 1e6:.0f} MB per version"
        )
    print(f"speed-up: {result['speedup_fp32']:.1f}x (fp32), {result['speedup_bf16']:.1f}x (bf16)")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
