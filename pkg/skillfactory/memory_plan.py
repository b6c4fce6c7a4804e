"""The memory plan of a run spec: estimated peak bytes per learner GPU and per rollout replica,
before anything runs (`skillfactory validate SPEC --show --gpus N --gpu-memory GiB`).

Learner GPU (GRPO, FSDP2 over the learner's GPUs, ZeRO-3 style: every rank holds 1/N of each
tensor):
- weights, gradients and AdamW moments: 4 + 4 + 8 bytes per parameter / N (`bf16-mixed`, `fp32`;
  2 + 2 + 4 under pure `bf16`); the layers being gathered (two at a time, prefetch);
- under `bf16-mixed`, the bf16 copies autocast makes of the weights, which autograd keeps for
  backward: 2 bytes per parameter, whole model;
- activations of one micro-batch of T padded tokens (`max_tokens_per_micro_batch`, groups split
  as the learner splits them): per token and layer, the fp32 residual stream and norms (8·h bytes)
  plus the layer's bf16 intermediates (2·(6h + 2·kv + 4·i) bytes; twice that in fp32); with
  gradient checkpointing only each layer's input (4·h) is kept, plus one layer's intermediates;
- the log-probabilities: the chunked path holds `logprob_chunk_tokens` × vocab fp32 logits three
  times over (logits, softmax, their gradient) and the final hidden states; the full-logits path
  (`chunked=False`, before issue 13) holds the micro-batch's completion tokens × vocab logits and
  their gradient, plus one row's fp32 copies;
- a reference model when `kl_beta > 0` (bf16, sharded).
Rollout replica (vLLM, bf16, one GPU): the weights, and the KV cache of the sequences in flight at
the spec's lengths (2 × layers × kv width × 2 bytes per token) for up to `max_sequences` of them,
within `gpu_memory_utilization`.

Estimates, not measurements: `benchmarks/learner_memory.py` measures the log-prob part on CPU,
and `benchmarks/gpu_paper_scale.sh` one GRPO rollout batch on a GPU; the README compares them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from skillfactory.models.shapes import ModelShape
from skillfactory.runspec import RunSpec, VllmEngineSpec

GIB = 1024**3
FSDP_PREFETCH_LAYERS = 2
VLLM_MAX_SEQUENCES = 256
"""vLLM's default `max_num_seqs`: sequences decoded together at most."""
VLLM_OVERHEAD_BYTES = 2 * GIB
"""CUDA graphs, sampler and activation workspace of a vLLM replica, roughly."""


@dataclass(frozen=True)
class Item:
    """One part of a memory estimate."""

    name: str
    bytes: int


@dataclass
class Estimate:
    """The parts of one device's peak memory, and whether they fit its capacity."""

    device: str
    capacity_bytes: int
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(item.bytes for item in self.items)

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.capacity_bytes

    def add(self, name: str, size: float) -> None:
        self.items.append(Item(name, int(size)))


def micro_batch_tokens(spec: RunSpec) -> tuple[int, int]:
    """Padded tokens and completion rows of the largest micro-batch the learner builds: a group
    of `group_size` completions of `max_response_length` after `max_prompt_length` prompt tokens,
    split into the fewest equal parts within `max_tokens_per_micro_batch`, parts packed together."""
    grpo = spec.grpo
    width = grpo.max_prompt_length + grpo.max_response_length
    budget = grpo.max_tokens_per_micro_batch
    sizes = [d for d in range(grpo.group_size, 0, -1) if grpo.group_size % d == 0]
    part = next((d for d in sizes if d * width <= budget), 1)
    rows = part * max(1, budget // (part * width))
    return rows * width, rows


def _layer_bytes_per_token(shape: ModelShape, compute_bytes: int) -> int:
    residual = 8 * shape.hidden
    inner = compute_bytes * (6 * shape.hidden + 2 * shape.kv_dim + 4 * shape.intermediate)
    return residual + inner


def learner_estimate(
    shape: ModelShape,
    spec: RunSpec,
    gpus: int,
    gpu_memory_gib: float,
    *,
    cuda: bool = True,
    chunked: bool = True,
    micro_batch: tuple[int, int] | None = None,
) -> Estimate:
    """Peak memory of one learner GPU in a GRPO update (see the module docstring).
    `micro_batch` (padded tokens, rows) overrides the spec's packing, e.g. to show the old
    semantics of one forward over a whole update."""
    grpo = spec.grpo
    precision = grpo.precision if grpo.precision != "auto" else ("bf16-mixed" if cuda else "fp32")
    n = shape.parameters
    estimate = Estimate(f"learner GPU (1 of {gpus})", int(gpu_memory_gib * GIB))
    weight_bytes = 2 if precision == "bf16" else 4
    estimate.add("weights (sharded)", weight_bytes * n / gpus)
    estimate.add("gradients (sharded)", weight_bytes * n / gpus)
    estimate.add("AdamW moments (sharded)", 2 * weight_bytes * n / gpus)
    if gpus > 1:
        estimate.add("gathered layers (FSDP)", FSDP_PREFETCH_LAYERS * 4 * shape.layer_parameters)
    if precision == "bf16-mixed":
        estimate.add("bf16 weight copies kept for backward (autocast)", 2 * n)
    tokens, rows = micro_batch or micro_batch_tokens(spec)
    compute_bytes = 4 if precision == "fp32" else 2
    per_layer = _layer_bytes_per_token(shape, compute_bytes)
    if grpo.gradient_checkpointing:
        estimate.add(
            "activations (checkpointed layer inputs)", tokens * shape.layers * 4 * shape.hidden
        )
        estimate.add("activations (one layer recomputed)", tokens * per_layer)
    else:
        estimate.add("activations", tokens * shape.layers * per_layer)
    completion_tokens = rows * grpo.max_response_length
    if chunked:
        chunk = min(grpo.logprob_chunk_tokens, completion_tokens)
        estimate.add(
            "log-prob chunk (logits, softmax, gradient; fp32)", 3 * 4 * chunk * shape.vocab
        )
        estimate.add("final hidden states and gradient", 2 * 4 * completion_tokens * shape.hidden)
    else:
        estimate.add(
            "full logits and their gradient (bf16)",
            2 * compute_bytes * completion_tokens * shape.vocab,
        )
        estimate.add("one row's fp32 log-softmax", 2 * 4 * grpo.max_response_length * shape.vocab)
    if grpo.kl_beta > 0:
        estimate.add("reference model (bf16, sharded)", 2 * n / gpus)
    estimate.notes.append(
        f"micro-batch: {tokens:,} padded tokens ({rows} completions); "
        f"{grpo.prompts_per_step // grpo.mini_batch_size} updates per rollout batch; "
        f"precision {precision}"
    )
    return estimate


def rollout_estimate(
    shape: ModelShape, spec: RunSpec, gpu_memory_gib: float, max_sequences: int = VLLM_MAX_SEQUENCES
) -> Estimate:
    """Peak memory of one rollout replica (one GPU, bf16) serving the spec's GRPO lengths."""
    grpo = spec.grpo
    utilization = (
        spec.engine.gpu_memory_utilization if isinstance(spec.engine, VllmEngineSpec) else 0.9
    )
    estimate = Estimate("rollout replica (1 GPU)", int(gpu_memory_gib * GIB * utilization))
    estimate.add("weights (bf16)", 2 * shape.parameters)
    estimate.add("engine workspace (CUDA graphs, sampler)", VLLM_OVERHEAD_BYTES)
    kv_per_token = 2 * shape.layers * shape.kv_dim * 2
    sequence_tokens = grpo.max_prompt_length + grpo.max_response_length
    in_flight = min(max_sequences, grpo.prompts_per_step * grpo.group_size)
    estimate.add(
        f"KV cache ({in_flight} sequences × {sequence_tokens} tokens)",
        kv_per_token * sequence_tokens * in_flight,
    )
    room = estimate.capacity_bytes - 2 * shape.parameters - VLLM_OVERHEAD_BYTES
    estimate.notes.append(
        f"KV cache room within gpu_memory_utilization {utilization:g}: "
        f"{max(0, room) // (kv_per_token * sequence_tokens)} full-length sequences at once"
    )
    return estimate


def render(estimates: list[Estimate], parameters: int) -> str:
    """The plan as text: one block per device, then whether each fits."""
    lines = [f"memory plan ({parameters / 1e9:.2f} B parameters)"]
    for estimate in estimates:
        lines.append(f"  {estimate.device}: capacity {estimate.capacity_bytes / GIB:.1f} GiB")
        for item in estimate.items:
            lines.append(f"    {item.bytes / GIB:9.2f} GiB  {item.name}")
        lines.append(f"    {estimate.total_bytes / GIB:9.2f} GiB  total")
        lines += [f"    {note}" for note in estimate.notes]
        verdict = "fits" if estimate.fits else "DOES NOT FIT"
        lines.append(f"    → {verdict}")
    return "\n".join(lines) + "\n"
