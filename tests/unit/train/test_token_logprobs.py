"""Chunked logprobs (`train.token_logprobs`) against today's full-logits path (`rollout_batch`).

Same values and the same gradients of every parameter (fp32, ≤ 1e-5 relative) for the
full-sequence and shared-prefix paths, for chunk sizes of 1 token, sizes that do not divide the
token count, exactly the count and more, with tied and untied embeddings; the GRPO loss cases of
the TRL cross-check (`test_grpo_loss_vs_trl.py`) fed with either path's logprobs; bf16 autocast;
entropy; and no tensor of `tokens × vocab` elements ever allocated (the old path does allocate
one, which shows the check can tell). The FSDP2 case runs this file as a `torchrun` worker.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from skillfactory.engines.base import Completion
from skillfactory.group import Group
from skillfactory.runspec import LossType
from skillfactory.tasks.base import Problem
from skillfactory.train.grpo_loss import GRPOLossConfig, grpo_policy_loss
from skillfactory.train.rollout_batch import (
    RolloutBatch,
    collate_groups,
    full_sequence_logprobs,
    shared_prefix_logprobs,
)
from skillfactory.train.token_logprobs import (
    chunked_completion_logprobs,
    chunked_full_sequence_logprobs,
    chunked_shared_prefix_logprobs,
    output_head,
    token_logprobs,
)

VOCAB = 4096
"""Large next to the hidden size (32), as Qwen2.5's 151,936 is next to 1,536."""
RTOL = 1e-5

Logprobs = Callable[[torch.nn.Module, RolloutBatch], Tensor]
PATHS: dict[str, tuple[Logprobs, Callable[..., Tensor]]] = {
    "full-sequence": (full_sequence_logprobs, chunked_full_sequence_logprobs),
    "shared-prefix": (shared_prefix_logprobs, chunked_shared_prefix_logprobs),
}


def build_model(tied: bool, vocab: int = VOCAB, **overrides: Any) -> torch.nn.Module:
    """A 2-layer Qwen2 (hidden 32) with a large vocabulary, fp32, seeded."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=tied,
        initializer_range=0.1,  # peakier distributions than the default 0.02
        **overrides,
    )
    return Qwen2ForCausalLM(config).float().train()


def make_batch(
    vocab: int, lengths: list[list[int]], prompt_lengths: list[int], seed: int = 1
) -> RolloutBatch:
    """Groups with the given completion lengths (ragged: right padding) and prompt lengths
    (different: left padding), random tokens and advantages."""
    generator = torch.Generator().manual_seed(seed)
    groups, advantages = [], []
    for index, (group_lengths, prompt_length) in enumerate(
        zip(lengths, prompt_lengths, strict=True)
    ):
        prompt = torch.randint(5, vocab, (prompt_length,), generator=generator).tolist()
        completions = [
            Completion(
                "",
                torch.randint(5, vocab, (n,), generator=generator).tolist(),
                [-1.0] * n,
                "stop",
                0,
                prompt,
            )
            for n in group_lengths
        ]
        rewards = [float(j % 2) for j in range(len(group_lengths))]
        problem = Problem("q", "t", "?", "a")
        groups.append(Group(f"p{index}", problem, prompt, completions, rewards))
        advantages.append(torch.randn(len(group_lengths), generator=generator).tolist())
    return collate_groups(groups, advantages, learner_version=0, pad_token_id=0)


def small_batch(vocab: int = VOCAB) -> RolloutBatch:
    """2 groups × 3 completions of 2–7 tokens (27 real tokens, 42 positions)."""
    return make_batch(vocab, [[7, 2, 5], [4, 6, 3]], [3, 5])


def gradients(model: torch.nn.Module) -> dict[str, Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def weighted_sum_gradients(
    model: torch.nn.Module, logprobs_of: Logprobs, batch: RolloutBatch
) -> tuple[Tensor, dict[str, Tensor]]:
    """The logprobs, and the gradients of Σ w·logprob over real tokens (w random, fixed)."""
    model.zero_grad(set_to_none=True)
    logprobs = logprobs_of(model, batch)
    weights = torch.randn(logprobs.shape, generator=torch.Generator().manual_seed(7))
    (logprobs * weights * batch.completion_mask).sum().backward()
    return logprobs.detach(), gradients(model)


def assert_close_relative(actual: Tensor, expected: Tensor, name: str = "") -> None:
    """Equal within `RTOL` of the tensor's scale (elementwise near-zeros would make a plain
    rtol meaningless)."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * scale, msg=name)


def assert_same_gradients(actual: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name, grad in expected.items():
        assert grad.abs().max() > 0, name  # every parameter takes part
        assert_close_relative(actual[name], grad, name)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("chunk_tokens", [1, 4, 7, 27, 10_000])
def test_logprobs_and_gradients_match_the_full_logits_path(
    path: str, tied: bool, chunk_tokens: int
) -> None:
    """27 real tokens: chunks of 1, 4 and 7 leave a remainder, 27 is one exact chunk."""
    model = build_model(tied)
    batch = small_batch()
    old, new = PATHS[path]
    expected, expected_grads = weighted_sum_gradients(model, old, batch)
    actual, actual_grads = weighted_sum_gradients(
        model, lambda m, b: new(m, b, chunk_tokens=chunk_tokens), batch
    )
    mask = batch.completion_mask.bool()
    assert batch.num_tokens == 27 and not mask.all()
    assert actual.dtype == torch.float32 and actual.shape == expected.shape
    assert_close_relative(actual[mask], expected[mask])
    assert (actual[~mask] == 0).all()  # padding is skipped
    assert_same_gradients(actual_grads, expected_grads)


def test_the_tiny_test_model_matches_too(tiny_model_dir: Path) -> None:
    """The session's tiny Llama (tied, vocabulary 512), shared prefix, chunks of 5."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    batch = small_batch(model.config.vocab_size)
    expected, expected_grads = weighted_sum_gradients(model, shared_prefix_logprobs, batch)
    actual, actual_grads = weighted_sum_gradients(
        model, lambda m, b: chunked_shared_prefix_logprobs(m, b, chunk_tokens=5), batch
    )
    mask = batch.completion_mask.bool()
    assert_close_relative(actual[mask], expected[mask])
    assert_same_gradients(actual_grads, expected_grads)


@pytest.mark.parametrize("shared_prefix", [True, False], ids=["shared-prefix", "full-sequence"])
def test_without_skipping_padding_every_position_matches(shared_prefix: bool) -> None:
    model = build_model(tied=True)
    batch = small_batch()
    old = shared_prefix_logprobs if shared_prefix else full_sequence_logprobs

    def new(m: torch.nn.Module, b: RolloutBatch) -> Tensor:
        out = chunked_completion_logprobs(
            m, b, shared_prefix=shared_prefix, chunk_tokens=5, skip_padding=False
        )
        return out.logprobs

    model.zero_grad(set_to_none=True)
    expected = old(model, batch)
    expected.sum().backward()  # padding included: its gradient too
    expected_grads = gradients(model)
    actual = new(model, batch)
    actual.sum().backward()
    assert_close_relative(actual.detach(), expected.detach())
    assert_same_gradients(gradients(model), expected_grads)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "loss_type", ["token-mean", "sequence-mean", "dr-grpo"], ids=["dapo", "grpo", "dr_grpo"]
)
@pytest.mark.parametrize("old_shift", [None, 0.3], ids=["on-policy", "clipped"])
@pytest.mark.parametrize("kl_beta", [0.0, 0.1], ids=["no-kl", "kl"])
def test_grpo_loss_and_gradients_match_the_full_logits_path(
    path: str, loss_type: LossType, old_shift: float | None, kl_beta: float
) -> None:
    """The TRL cross-check's cases (loss types, ratios clipped by shifted old logprobs, the k3
    KL), with the loss normalisers of a larger update (a micro-batch of it)."""
    model = build_model(tied=True)
    batch = small_batch()
    old, new = PATHS[path]
    with torch.no_grad():
        current = old(model, batch)
    signs = torch.ones_like(current)
    signs[:, 1::2] = -1.0
    proximal = None if old_shift is None else current + old_shift * signs
    ref = current - 0.2 * signs.flip(0)
    config = GRPOLossConfig(loss_type=loss_type, kl_beta=kl_beta, max_completion_length=8)

    def loss_of(logprobs_of: Logprobs) -> tuple[float, float, dict[str, Tensor]]:
        model.zero_grad(set_to_none=True)
        logprobs = logprobs_of(model, batch)
        prox = logprobs.detach() if proximal is None else proximal
        out = grpo_policy_loss(
            logprobs,
            prox,
            prox,
            batch.advantages,
            batch.completion_mask,
            config,
            ref_logprobs=ref,
            num_tokens=2 * batch.num_tokens,
            num_sequences=12,
        )
        out.loss.backward()
        return float(out.loss.detach()), float(out.clip_fraction), gradients(model)

    expected, clipped, expected_grads = loss_of(old)
    actual, _, actual_grads = loss_of(lambda m, b: new(m, b, chunk_tokens=4))
    if old_shift is not None:
        assert clipped > 0.0  # the clipped branch is exercised
    assert actual == pytest.approx(expected, rel=RTOL)
    assert_same_gradients(actual_grads, expected_grads)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    """The learner turns HF gradient checkpointing on with `grpo.gradient_checkpointing` (and
    then takes the full-sequence path): the decoder's output is still what the head sees."""
    model = build_model(tied=True)
    batch = small_batch()
    expected, expected_grads = weighted_sum_gradients(model, full_sequence_logprobs, batch)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    actual, actual_grads = weighted_sum_gradients(
        model, lambda m, b: chunked_full_sequence_logprobs(m, b, chunk_tokens=4), batch
    )
    mask = batch.completion_mask.bool()
    assert_close_relative(actual[mask], expected[mask])
    assert_same_gradients(actual_grads, expected_grads)


def test_entropy_is_that_of_the_full_softmax_and_carries_no_gradient() -> None:
    model = build_model(tied=False)
    batch = small_batch()
    out = chunked_completion_logprobs(model, batch, chunk_tokens=3, with_entropy=True)
    prompt_len, completion_len = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    with torch.no_grad():
        logits = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).logits[:, prompt_len - 1 : prompt_len + completion_len - 1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        expected = -(logp.exp() * logp).sum(dim=-1)
    mask = batch.completion_mask.bool()
    assert out.entropy is not None and not out.entropy.requires_grad
    assert out.logprobs.requires_grad
    assert_close_relative(out.entropy[mask], expected[mask])
    assert (out.entropy[~mask] == 0).all()
    assert chunked_completion_logprobs(model, batch).entropy is None


def test_the_no_grad_pass_gives_the_same_logprobs_bit_for_bit() -> None:
    """The learner's proximal logprobs come from a no-grad pass and its first update's ratio must
    be exactly 1 (`max_staleness: 0` is on-policy GRPO)."""
    model = build_model(tied=True)
    batch = small_batch()
    with torch.no_grad():
        proximal = chunked_shared_prefix_logprobs(model, batch, chunk_tokens=4)
    logprobs = chunked_shared_prefix_logprobs(model, batch, chunk_tokens=4)
    assert logprobs.requires_grad
    assert torch.equal(logprobs.detach(), proximal)


def test_bf16_autocast_recomputes_under_the_forward_autocast() -> None:
    """Under bf16 autocast (the learner's `bf16-mixed`) with backward called outside it, as the
    learner does: with one chunk the recomputed logits are the forward's bf16 ones, so values and
    gradients equal the old path's exactly; with chunks of 5 they differ only by the bf16
    rounding of the head's per-chunk weight gradient."""
    model = build_model(tied=False)
    batch = small_batch()
    mask = batch.completion_mask.bool()

    def run(logprobs_of: Logprobs) -> tuple[Tensor, dict[str, Tensor]]:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logprobs = logprobs_of(model, batch)
        weights = torch.randn(logprobs.shape, generator=torch.Generator().manual_seed(7))
        (logprobs * weights * batch.completion_mask).sum().backward()
        return logprobs.detach(), gradients(model)

    expected, expected_grads = run(full_sequence_logprobs)
    actual, actual_grads = run(lambda m, b: chunked_full_sequence_logprobs(m, b, chunk_tokens=64))
    assert actual.dtype == torch.float32
    assert torch.equal(actual[mask], expected[mask])
    for name, grad in expected_grads.items():
        assert torch.equal(actual_grads[name], grad), name
    _, chunked_grads = run(lambda m, b: chunked_full_sequence_logprobs(m, b, chunk_tokens=5))
    for name, grad in expected_grads.items():
        torch.testing.assert_close(
            chunked_grads[name], grad, rtol=2e-2, atol=2e-2 * float(grad.abs().max())
        )


class LargestAllocation(TorchDispatchMode):
    """The most elements of any tensor storage an op created (views share their base's)."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, Tensor):
                size = tensor.untyped_storage().nbytes() // tensor.element_size()
                self.elements = max(self.elements, size)
        return out


@pytest.mark.parametrize("path", PATHS)
def test_no_tensor_of_tokens_times_vocab_is_ever_allocated(path: str) -> None:
    """Forward, GRPO loss and backward of 192 completion tokens with chunks of 16: the largest
    tensor any op allocates stays below a quarter of `[tokens × vocab]` (the head's weight
    gradient, vocab × hidden = 1/6 of it, is the largest legitimate one); the old path allocates
    the whole of it, so the check can fail."""
    model = build_model(tied=True)
    batch = make_batch(VOCAB, [[24] * 4, [24] * 4], [6, 9])
    tokens, chunk = batch.num_tokens, 16
    assert tokens == 192 and tokens * VOCAB / 4 > VOCAB * 32
    old, new = PATHS[path]
    config = GRPOLossConfig()

    def largest(logprobs_of: Logprobs) -> int:
        with LargestAllocation() as mode:
            logprobs = logprobs_of(model, batch)
            proximal = logprobs.detach()
            grpo_policy_loss(
                logprobs, proximal, proximal, batch.advantages, batch.completion_mask, config
            ).loss.backward()
        model.zero_grad(set_to_none=True)
        return mode.elements

    assert largest(old) >= tokens * VOCAB
    chunked = largest(lambda m, b: new(m, b, chunk_tokens=chunk))
    assert chunk * VOCAB <= chunked < tokens * VOCAB / 4


def test_token_logprobs_checks_its_arguments() -> None:
    head = torch.nn.Linear(4, 10)
    with pytest.raises(ValueError, match="chunk_tokens"):
        token_logprobs(torch.zeros(3, 4), head, torch.zeros(3, dtype=torch.long), chunk_tokens=0)
    with pytest.raises(ValueError, match="do not match"):
        token_logprobs(torch.zeros(3, 4), head, torch.zeros(2, dtype=torch.long))
    empty = token_logprobs(torch.zeros(0, 4), head, torch.zeros(0, dtype=torch.long))
    assert empty.logprobs.shape == (0,)


def test_a_head_with_logit_softcapping_is_refused() -> None:
    model = build_model(tied=True)
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(NotImplementedError, match="softcapping"):
        output_head(model)


# FSDP2: this file is also the `torchrun` worker.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_batch(rank: int) -> RolloutBatch:
    return make_batch(VOCAB, [[3, 5, 2, 6]], [4], seed=10 + rank)


def fsdp_worker(tied: bool, out: Path) -> None:
    """Each of 2 ranks: chunked logprobs of its own batch through an FSDP2-sharded model, twice
    (the second step finds FSDP's state reset); rank 0 writes the gathered gradients' relative
    error against one process running the old path on both batches (gradients averaged)."""
    from skillfactory.train.parallel import shard_model

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    reference = build_model(tied)
    for index in range(2):
        batch = rank_batch(index)
        (shared_prefix_logprobs(reference, batch) * batch.completion_mask).sum().div(2).backward()
    model = shard_model(build_model(tied))
    batch = rank_batch(rank)
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        logprobs = chunked_shared_prefix_logprobs(model, batch, chunk_tokens=3)
        (logprobs * batch.completion_mask).sum().backward()
    errors = {}
    for (name, param), expected in zip(
        model.named_parameters(), reference.parameters(), strict=True
    ):
        assert param.grad is not None and expected.grad is not None
        full = param.grad.full_tensor()  # type: ignore[attr-defined]
        errors[name] = float((full - expected.grad).norm() / expected.grad.norm())
    if rank == 0:
        out.write_text(json.dumps(errors))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_fsdp2_sharded_gradients_equal_one_process(tied: bool, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun comes with torch"
    out = tmp_path / "errors.json"
    command = [torchrun, "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={free_port()}", __file__, "tied" if tied else "untied", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    errors = json.loads(out.read_text())
    assert errors and max(errors.values()) < RTOL, errors


if __name__ == "__main__":
    fsdp_worker(sys.argv[1] == "tied", Path(sys.argv[2]))
