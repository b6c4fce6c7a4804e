"""The learner under `torchrun` with 2 processes (FSDP2 on CPU over gloo) matches one process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).parent / "fsdp_worker.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_worker(args: list[str], processes: int, spec: dict[str, object] | None = None) -> None:
    if processes == 1:
        command = [sys.executable, str(WORKER), *args]
    else:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
        assert torchrun, "torchrun comes with torch"
        command = [torchrun, f"--nproc_per_node={processes}", "--master_addr=127.0.0.1",
                   f"--master_port={free_port()}", str(WORKER), *args]  # fmt: skip
    env = {**ENV, "SF_GRPO_SPEC": json.dumps(spec or {})}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def outputs(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    weights = torch.load(folder / "weights.pt", weights_only=True)
    return weights, json.loads((folder / "metrics.json").read_text())


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-4, msg=name)


@pytest.fixture(scope="module")
def single(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    run_worker([str(tiny_model_dir), str(out)], 1)
    return out


@pytest.fixture(scope="module")
def sharded(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sharded")
    run_worker([str(tiny_model_dir), str(out)], 2)
    return out


def test_two_fsdp_processes_train_like_one(sharded: Path, single: Path) -> None:
    weights, metrics = outputs(sharded)
    single_weights, single_metrics = outputs(single)
    assert metrics["world"] == 2 and single_metrics["world"] == 1
    assert_same_weights(weights, single_weights)
    for ours, theirs in zip(metrics["steps"], single_metrics["steps"], strict=True):  # type: ignore[call-overload]
        assert ours["version"] == theirs["version"]
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-5)
        assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-3)
        assert ours["samples"] == theirs["samples"] == 16
    base = torch.load(single / "weights.pt", weights_only=True)
    assert any(not torch.equal(base[k], v) for k, v in weights.items())


def test_a_checkpoint_from_two_processes_resumes_in_one(
    tiny_model_dir: Path, tmp_path: Path, sharded: Path, single: Path
) -> None:
    checkpoint = sharded / "checkpoints" / "step-000001"
    assert (checkpoint / "model" / "config.json").exists()
    run_worker([str(tiny_model_dir), str(tmp_path), str(checkpoint)], 1)
    weights, metrics = outputs(tmp_path)
    assert [s["version"] for s in metrics["steps"]] == [2]  # type: ignore[index]
    assert_same_weights(weights, outputs(single)[0])


def test_two_processes_with_uneven_micro_batches_and_several_updates_train_like_one(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Two updates per step, and a token budget that packs each rank's group into a different
    number of micro-batches: the rank with fewer repeats one at weight 0 (every FSDP2 forward is
    a collective), and the result is the single process's."""
    spec = {"prompts_per_step": 4, "mini_batch_size": 2, "max_tokens_per_micro_batch": 14}
    run_worker([str(tiny_model_dir), str(tmp_path / "one")], 1, spec)
    run_worker([str(tiny_model_dir), str(tmp_path / "two")], 2, spec)
    weights, metrics = outputs(tmp_path / "two")
    single_weights, single_metrics = outputs(tmp_path / "one")
    assert_same_weights(weights, single_weights)
    for ours, theirs in zip(metrics["steps"], single_metrics["steps"], strict=True):  # type: ignore[call-overload]
        assert ours["updates"] == theirs["updates"] == 2
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-5)


def test_lora_under_two_fsdp_processes_trains_and_resumes_like_one(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """LoRA adapters on a sharded model: the merged weights of two processes are one process's,
    and the adapter checkpoint they write resumes in one process."""
    spec = {"lora": {"rank": 4, "alpha": 8.0}}
    run_worker([str(tiny_model_dir), str(tmp_path / "one")], 1, spec)
    run_worker([str(tiny_model_dir), str(tmp_path / "two")], 2, spec)
    weights, _ = outputs(tmp_path / "two")
    single_weights, _ = outputs(tmp_path / "one")
    assert_same_weights(weights, single_weights)
    checkpoint = tmp_path / "two" / "checkpoints" / "step-000001"
    assert (checkpoint / "adapter" / "adapter_config.json").exists()
    (tmp_path / "resumed").mkdir()
    run_worker([str(tiny_model_dir), str(tmp_path / "resumed"), str(checkpoint)], 1, spec)
    assert_same_weights(outputs(tmp_path / "resumed")[0], single_weights)
