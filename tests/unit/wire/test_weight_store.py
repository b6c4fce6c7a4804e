"""The weight store: publish versions atomically, verify notices, load them into an engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skillfactory.wire.weight_store import TornWeights, WeightStore, verify


def test_publish_verify_and_load_into_the_engine(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from skillfactory.engines.transformers_engine import TransformersEngine

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    store = WeightStore(tmp_path / "weights", keep=2)
    update = store.publish(model.state_dict(), version=1, run_id="r")
    assert update.version == 1 and update.run_id == "r" and update.uri.startswith("file://")
    folder = verify(update)
    engine = TransformersEngine(str(tiny_model_dir), device="cpu")
    engine.load_weights(folder, update.version)
    assert engine.policy_version == 1
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(engine.model.state_dict()[name], tensor, msg=name)


def test_only_the_newest_versions_stay_and_torn_reads_are_caught(tmp_path: Path) -> None:
    store = WeightStore(tmp_path, keep=2)
    updates = [store.publish({"w": torch.full((3,), float(v))}, version=v) for v in (1, 2, 3)]
    assert store.versions() == [2, 3] and store.latest() == 3
    with pytest.raises(TornWeights, match="does not exist"):
        verify(updates[0])
    verify(updates[2])
    (store.folder(3) / "model.safetensors").write_bytes(b"half a file")
    with pytest.raises(TornWeights, match="checksum"):
        verify(updates[2])


def test_tied_weights_are_stored_once(tmp_path: Path) -> None:
    shared = torch.ones(4, 2)
    update = WeightStore(tmp_path).publish({"embed": shared, "head": shared}, version=1)
    from safetensors.torch import load_file

    assert set(load_file(str(verify(update) / "model.safetensors"))) == {"embed"}


def test_the_publisher_copies_then_writes_in_the_background_in_the_engines_dtype(
    tmp_path: Path,
) -> None:
    """The caller's tensors may change right after `submit`: the version holds what they were;
    the file is in the engines' dtype and passes its checksum; one version is in flight."""
    from safetensors.torch import load_file

    from skillfactory.wire.weight_store import WeightPublisher

    store = WeightStore(tmp_path)
    publisher = WeightPublisher(store, dtype=torch.bfloat16, run_id="r")
    weights = {"w": torch.full((64, 64), 0.5), "b": torch.zeros(64)}
    publisher.submit(weights, 1)
    weights["w"].add_(1.0)  # the next optimizer step
    publisher.submit(weights, 2)  # waits for version 1 first
    notice = publisher.flush()
    assert notice is not None and notice.version == 2 and notice.run_id == "r"
    first = load_file(str(store.verified(1) / "model.safetensors"))
    assert first["w"].dtype == torch.bfloat16 and torch.all(first["w"] == 0.5)
    second = load_file(str(verify(notice) / "model.safetensors"))
    assert torch.all(second["w"] == 1.5)
    assert (store.folder(2) / "model.safetensors").stat().st_size < 64 * 64 * 4  # bf16, not fp32
