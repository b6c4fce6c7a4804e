"""LoRA (PEFT) for the learners: adapters on a model, merged weights for engines, adapter files.

`sft.lora` / `grpo.lora` (`LoraSpec`) become a PEFT `LoraConfig` (`lora_config`). SFT hands it to
TRL's `SFTTrainer` as `peft_config`; the GRPO learner wraps its model with `LoraAdapters`, which
injects the adapters in place (the model object, its forward and its output head stay the ones
the learner calls) and freezes every other weight.

What leaves the learner is always a plain model: `LoraAdapters.merge` turns a full state dict of
the wrapped model (base weights, `lora_A`, `lora_B`) into the base model's own names and shapes
with W + scaling · B A (scaling = alpha / rank) for every adapted layer, computed from tensors
already gathered (FSDP2 too) without touching the training model. Engines, the weight store and
the next stage therefore take LoRA runs exactly as full fine-tuning ones.

Adapter files are PEFT's (`adapter_config.json`, `adapter_model.safetensors`; loadable with
`peft.PeftModel.from_pretrained`): `save_adapter` writes them from a full state dict,
`adapter_state` reads them back under the wrapped model's own parameter names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from skillfactory.runspec import LoraSpec

ADAPTER = "default"
"""PEFT's adapter name; it appears in parameter names (`lora_A.default.weight`), not in files."""
ADAPTER_DIR = "adapter"
"""Where an adapter is written beside (or inside) a model folder."""
ADAPTER_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
"""What PEFT puts before the wrapped model's parameter names in adapter files."""
_LORA_PARAM = re.compile(r"\.(lora_[AB])\.")
_FILE_KEY = re.compile(r"\.(lora_[AB])\.(weight|bias)$")


def lora_config(spec: LoraSpec) -> Any:
    """PEFT's `LoraConfig` for a causal LM from `spec` (rank > 0)."""
    # deferred: heavy or optional (peft)
    from peft import LoraConfig

    targets = spec.target_modules
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,  # type: ignore[arg-type]  # PEFT annotates int; any float works
        lora_dropout=spec.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


class LoraAdapters:
    """LoRA adapters injected into `model` in place; every other weight frozen. The adapters
    start from `seed` whatever the global RNG holds (PEFT's init: A random, B zero), so every
    rank of a sharded learner, and a single process, start from the same ones."""

    def __init__(self, model: torch.nn.Module, spec: LoraSpec, seed: int = 0) -> None:
        # deferred: heavy or optional (peft)
        from peft import get_peft_model
        from peft.tuners.lora import LoraLayer

        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            self.peft_model: Any = get_peft_model(model, lora_config(spec))
        self.model = model
        self.layers: dict[str, tuple[float, bool]] = {
            name: (float(module.scaling[ADAPTER]), bool(getattr(module, "fan_in_fan_out", False)))
            for name, module in model.named_modules()
            if isinstance(module, LoraLayer)
        }
        """Adapted layers by module name: (scaling, fan_in_fan_out)."""
        if not self.layers:
            raise ValueError(f"lora.target_modules {spec.target_modules} match no layer")

    def trainable(self) -> list[torch.nn.Parameter]:
        """The adapter parameters (the only ones with gradients)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def merge(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The base model's weights with every adapter merged in, from a full state dict of the
        wrapped model (new tensors for the adapted layers; the others are `state`'s own). An
        empty state (what ranks other than 0 gather under FSDP2) stays empty."""
        if not state:
            return {}
        merged: dict[str, Tensor] = {}
        for key, value in state.items():
            if ".lora_" in key:
                continue
            merged[key.replace(".base_layer.", ".")] = value
        for name, (scaling, fan_in_fan_out) in self.layers.items():
            a = state[f"{name}.lora_A.{ADAPTER}.weight"]
            b = state[f"{name}.lora_B.{ADAPTER}.weight"]
            base = state[f"{name}.base_layer.weight"]
            delta = b.to(torch.float32) @ a.to(torch.float32)
            if fan_in_fan_out:
                delta = delta.T
            weight = base.to(torch.float32) + delta.to(base.device) * scaling
            merged[f"{name}.weight"] = weight.to(base.dtype)
        return merged

    def adapter_weights(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The adapter tensors of a full state dict, under the wrapped model's names."""
        return {key: value for key, value in state.items() if ".lora_" in key}

    def save_adapter(self, folder: str | Path, state: dict[str, Tensor]) -> None:
        """Write the adapter in PEFT's format from a full state dict of the wrapped model."""
        prefixed = {PEFT_PREFIX + k: v for k, v in self.adapter_weights(state).items()}
        self.peft_model.save_pretrained(str(folder), state_dict=prefixed)

    def adapter_state(self, folder: str | Path, device: str | torch.device) -> dict[str, Tensor]:
        """The adapter tensors of a PEFT adapter folder under the wrapped model's parameter
        names (ready for `load_state_dict(strict=False)`); every adapter parameter must be there
        and nothing else."""
        # deferred: heavy or optional (safetensors)
        from safetensors.torch import load_file

        loaded = load_file(str(Path(folder) / ADAPTER_FILE), device=str(device))
        state = {}
        for key, value in loaded.items():
            if not key.startswith(PEFT_PREFIX) or not _FILE_KEY.search(key):
                raise ValueError(f"{folder}: {key!r} is not a LoRA adapter weight")
            name = _LORA_PARAM.sub(rf".\1.{ADAPTER}.", key[len(PEFT_PREFIX) :])
            state[name] = value
        expected = {k for k in self.model.state_dict() if ".lora_" in k}
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(
                f"{folder} does not fit the adapters: missing {missing[:3]}, extra {extra[:3]}"
            )
        return state
