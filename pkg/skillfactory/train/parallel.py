"""Data parallelism for the learner under `torchrun`: FSDP2 (`fully_shard`), on GPUs or on CPU.

Without a process group everything here is the identity. With one, every decoder layer and then
the whole model are sharded with `fully_shard` (FSDP2; it runs on CPU with the gloo backend too,
which is how the tests run it), gradients are averaged over ranks like DDP's, and full (unsharded)
state dicts are gathered for publishing weights and checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor


def world() -> tuple[int, int]:
    """This process's rank and the world size (0, 1 without a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """Shard the decoder layers, then the root (embeddings, norm, head), with FSDP2 when a process
    group exists; the model itself (its class and methods) stays the one to call."""
    if world()[1] == 1:
        return model
    # deferred: heavy or optional (torch)
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(model)
    return model


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a HF causal LM (`model.model.layers`), else none."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    return list(layers) if layers is not None else []


@contextmanager
def gradient_sync(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Within it, backward reduces gradients over ranks only when `enabled` (the last
    micro-batch of a step), as DDP's `no_sync` does."""
    setter = getattr(model, "set_requires_gradient_sync", None)
    if setter is None or world()[1] == 1:
        yield
        return
    setter(enabled)
    try:
        yield
    finally:
        setter(True)


def full_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """Unsharded weights on CPU (gathered on every rank under FSDP2); plain `state_dict` alone."""
    if world()[1] == 1:
        return dict(model.state_dict())
    # deferred: heavy or optional (torch)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state: dict[str, Any] = get_model_state_dict(model, options=options)
    return state


def load_full_state_dict(model: torch.nn.Module, state: dict[str, Tensor]) -> None:
    """Load unsharded weights (tied ones may be missing) into a plain or sharded model."""
    if world()[1] == 1:
        model.load_state_dict(state, strict=False)
        return
    # deferred: heavy or optional (torch)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full: dict[str, Any] = dict(state)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, strict=False))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Any:
    """The optimizer state, unsharded (keyed by parameter name under FSDP2)."""
    if world()[1] == 1:
        return optimizer.state_dict()
    # deferred: heavy or optional (torch)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_full_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: Any
) -> None:
    """Restore what `full_optimizer_state` returned."""
    if world()[1] == 1:
        optimizer.load_state_dict(state)
        return
    # deferred: heavy or optional (torch)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(model, optimizer, state, options=options)
