"""The GRPO learner: turns rollout batches of groups into optimizer updates and policy versions.

One step (`train_step`) trains policy version `v` into `v + 1` on the `prompts_per_step` groups of
one rollout batch the learner accepted (`accepts`: not staler than `max_staleness`, and not of
constant reward when `filter_zero_variance` is on). The update semantics are verl's
(`train_batch_size` / `ppo_mini_batch_size` / `ppo_epochs`):

1. advantages are the rewards centred per group (on the others' mean with `leave_one_out`)
   and scaled by `advantage_norm` (group std, batch std, or none: Dr.GRPO's default); with
   `kl_in_reward` each reward first loses β·Σ_t KL_t of its completion (a no-grad pass of the
   policy and the reference model over the whole rollout batch), and with
   `overlong_buffer_length` each gets DAPO's soft overlong penalty from its token count
   (`skillfactory.train.overlong`; applied here, not by the reward service, so embedded and
   distributed runs shape rewards alike). With `mask_truncated_completions`, completions cut at
   their token budget (finish reason `length`) keep their place in the group's baseline but
   leave the loss and its normalisers (TRL's `mask_truncated_completions`);
2. the rollout batch is cut into optimizer updates of `mini_batch_size` groups (the paper: 256
   prompts / 32 = 8 updates), and the updates run `epochs_per_batch` times;
3. an update's completions are packed into micro-batches of at most `max_tokens_per_micro_batch`
   padded tokens (`rollout_batch.pack_micro_batches`); each is one forward and backward with the
   loss normalisers (tokens, sequences) of the whole update, so the accumulated gradient is the
   update's;
4. the proximal logprobs are those of the weights at the start of the rollout batch: with one
   update they are the detached logprobs of the update's own forward pass (the PPO ratio is
   exactly 1); with several, a no-grad pass over every micro-batch keeps them before the first
   update (`keep_proximal_logprobs`);
5. behaviour logprobs are the engine's, and every logprob (engine, learner, reference) is at
   the sampling temperature (logits / `grpo.temperature`). A completion sampled by the current
   version (staleness 0) was sampled by the proximal policy itself, so its importance weight is
   exactly 1, which makes `max_staleness: 0` synchronous on-policy GRPO, unless
   `correct_engine_mismatch` weights it by min(π_learner/π_engine, cap) like the staler tokens
   (w = min(π_prox/π_behav, cap)); the ratio's mean and max are in every step record;
6. each update clips gradients to `max_grad_norm` and steps AdamW; after the rollout batch the
   version goes up by one (staleness is counted in rollout batches).

Precision (`grpo.precision`): `bf16-mixed` keeps fp32 master weights and optimizer state and runs
the forward under bf16 autocast (CPU too); `fp32`; `bf16` holds the weights in bf16.
`gradient_checkpointing` recomputes activations in backward.

With `grpo.lora` (rank > 0) the model carries PEFT LoRA adapters (`skillfactory.train.lora`):
only they train and sit in the optimizer; checkpoints hold the adapter (PEFT format, in
`adapter/`) with its optimizer state instead of the whole model; `weights` and `save_model`
give the merged weights (W + alpha / rank · B A) under the base model's names, so engines and
the weight sync take them as they take fully trained ones.

Under `torchrun` (a process group is initialised) the model is sharded with FSDP2
(`skillfactory.train.parallel`) and each rank trains its share of each update's groups
(`groups[rank::world]`); every rank sees the same groups, so the loss normalisers stay global, and
the gradient averaged over ranks is the single-process one. Ranks run as many micro-batches as the
rank with the most (weight-0 repeats), since every FSDP2 forward is a collective.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from skillfactory.engines.base import Completion
from skillfactory.files import write_text_atomically
from skillfactory.group import Group, reward_term_failures, reward_term_means
from skillfactory.runspec import AdvantageNorm, GRPOSpec
from skillfactory.train.advantages import rollout_advantages
from skillfactory.train.grpo_loss import GRPOLossConfig, grpo_policy_loss, kl_estimate
from skillfactory.train.lora import ADAPTER_DIR, LoraAdapters
from skillfactory.train.overlong import group_overlong_penalties, is_truncated, truncated_share
from skillfactory.train.parallel import (
    full_optimizer_state,
    full_state_dict,
    gradient_sync,
    load_full_optimizer_state,
    load_full_state_dict,
    shard_model,
    world,
)
from skillfactory.train.precision import resolve_precision
from skillfactory.train.rollout_batch import (
    RolloutBatch,
    collate_parts,
    pack_micro_batches,
)
from skillfactory.train.staleness import StalenessFilter
from skillfactory.train.step_record import StepRecord
from skillfactory.train.token_logprobs import TokenLogprobs, chunked_completion_logprobs

STATE_FILE = "learner.json"
MODEL_DIR = "model"
LATEST_FILE = "latest"
CHECKPOINT_NAME = re.compile(r"step-\d{6,}")
MAX_METRICS = frozenset({"mismatch_ratio_max"})
"""Loss metrics reduced by their maximum over micro-batches, updates and ranks (not averaged)."""


@dataclass
class Update:
    """One optimizer update: this rank's micro-batches and the whole update's loss normalisers."""

    micro_batches: list[RolloutBatch]
    num_tokens: int
    num_sequences: int


@dataclass
class LearnerCounters:
    """Everything about the run's progress a checkpoint must carry besides tensors."""

    version: int = 0
    """Policy version of the current weights: optimizer steps taken."""
    groups_trained: int = 0
    samples_trained: int = 0
    tokens_trained: int = 0
    dropped_stale: int = 0
    dropped_zero_variance: int = 0
    done_prompts: list[int] = field(default_factory=list)
    """Prompt-stream indices already trained on or dropped: never admitted again."""


class Learner(Protocol):
    """What the GRPO stage and the follower ranks call on a learner (`GRPOLearner`, or rank 0's
    `LeaderLearner` that brings the other ranks along)."""

    @property
    def version(self) -> int:
        """Policy version of the current weights."""
        ...

    @property
    def counters(self) -> LearnerCounters:
        """Progress a checkpoint carries besides tensors."""
        ...

    @property
    def world_size(self) -> int:
        """Processes training together."""
        ...

    def is_done(self, prompt_index: int) -> bool:
        """Whether a prompt was already trained on or dropped."""
        ...

    def accepts(self, group: Group) -> bool:
        """Whether `group` may join the next step (a refused group is counted and marked done)."""
        ...

    def train_step(self, groups: Sequence[Group]) -> StepRecord:
        """One optimizer step on accepted groups."""
        ...

    def weights(self) -> dict[str, Tensor]:
        """The current full weights, for engines."""
        ...

    def save_checkpoint(self, root: str | Path) -> Path:
        """Write a checkpoint under `root`; returns its folder."""
        ...

    def save_model(self, folder: str | Path) -> None:
        """Write the current weights as a Hugging Face model folder."""
        ...


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in backward (non-reentrant)."""
    enable = getattr(model, "gradient_checkpointing_enable", None)
    if enable is None:
        raise ValueError(f"{type(model).__name__} cannot checkpoint its activations")
    enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def warmup_then_constant(warmup_steps: int) -> Any:
    """LR multiplier: linear warmup over `warmup_steps`, then constant."""

    def factor(step: int) -> float:
        return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)

    return factor


class GRPOLearner:
    """Trains a causal LM with the decoupled-PPO GRPO loss, one policy version per step."""

    def __init__(
        self,
        model: torch.nn.Module,
        spec: GRPOSpec,
        *,
        pad_token_id: int,
        ref_model: torch.nn.Module | None = None,
        counters: LearnerCounters | None = None,
    ) -> None:
        if spec.kl_beta > 0 and ref_model is None:
            raise ValueError("grpo.kl_beta > 0 needs a reference model")
        self.spec = spec
        self.lora = LoraAdapters(model, spec.lora) if spec.lora.rank > 0 else None
        self.rank, self.world_size = world()
        self.precision = resolve_precision(
            spec.precision, spec.learning_rate, cuda=torch.cuda.is_available()
        )
        self.autocast = self.precision == "bf16-mixed"
        if self.precision == "bf16":
            model.to(torch.bfloat16)
        if spec.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model = shard_model(model)
        self.ref_model = ref_model if ref_model is None else shard_model(ref_model)
        self.pad_token_id = pad_token_id
        self.loss_config = GRPOLossConfig.from_spec(spec)
        self.counters = counters or LearnerCounters()
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],  # LoRA: the adapters only
            lr=spec.learning_rate,
            weight_decay=0.0,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_then_constant(spec.warmup_steps)
        )
        self._staleness = StalenessFilter(spec.max_staleness)
        self._done = set(self.counters.done_prompts)

    @property
    def version(self) -> int:
        """Policy version of the current weights."""
        return self.counters.version

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live."""
        return next(self.model.parameters()).device

    def is_done(self, prompt_index: int) -> bool:
        """Whether a prompt was already trained on or dropped (a resumed run skips it)."""
        return prompt_index in self._done

    def accepts(self, group: Group) -> bool:
        """Whether `group` may join the next step; a refused group is counted and marked done."""
        if not self._staleness.keep(self.version, group.policy_version):
            self.counters.dropped_stale += 1
            self._mark_done(group)
            return False
        if self.spec.filter_zero_variance and not group.rewards_vary():
            self.counters.dropped_zero_variance += 1
            self._mark_done(group)
            return False
        return True

    def _mark_done(self, group: Group) -> None:
        if group.prompt_index >= 0 and group.prompt_index not in self._done:
            self._done.add(group.prompt_index)
            self.counters.done_prompts.append(group.prompt_index)

    @property
    def advantage_norm(self) -> AdvantageNorm:
        """`grpo.advantage_norm`, or its default: `none` under dr-grpo, else `group`."""
        if self.spec.advantage_norm is not None:
            return self.spec.advantage_norm
        return "none" if self.spec.loss == "dr-grpo" else "group"

    def advantages(
        self, groups: Sequence[Group], rewards: Sequence[Sequence[float]] | None = None
    ) -> list[list[float]]:
        """Advantages of a rollout batch, one list per group (`advantage_norm`, `leave_one_out`),
        from the groups' rewards or the `rewards` given instead (KL-penalised ones)."""
        return rollout_advantages(
            [g.rewards for g in groups] if rewards is None else rewards,
            norm=self.advantage_norm,
            leave_one_out=self.spec.leave_one_out,
        )

    def kl_penalised_rewards(self, groups: Sequence[Group]) -> list[list[float]]:
        """Each reward minus β·Σ_t KL_t of its completion (`kl_in_reward`, verl's
        `apply_kl_penalty`): the current weights' logprobs against the reference model's, no
        gradient, over every group (every rank runs the same forwards)."""
        if self.ref_model is None:
            raise ValueError("kl_in_reward needs a reference model")
        zeros = [[0.0] * len(g.completions) for g in groups]
        sums: list[float] = []
        with torch.no_grad():
            for parts in pack_micro_batches(groups, zeros, self.spec.max_tokens_per_micro_batch):
                batch = collate_parts(parts, self.version, self.pad_token_id).to(self.device)
                with self._mixed_precision():
                    logprobs = self._logprobs(self.model, batch).logprobs.float()
                    ref = self._logprobs(self.ref_model, batch).logprobs.float()
                kl = kl_estimate(logprobs, ref, self.spec.kl_estimator) * batch.completion_mask
                sums.extend(kl.sum(dim=1).tolist())
        result, start = [], 0
        for group in groups:
            size = len(group.completions)
            result.append(
                [
                    reward - self.spec.kl_beta * kl
                    for reward, kl in zip(group.rewards, sums[start : start + size], strict=True)
                ]
            )
            start += size
        return result

    def overlong_penalties(self, groups: Sequence[Group]) -> list[list[float]]:
        """DAPO's soft overlong penalty of every completion, one list per group (all 0 when
        `overlong_buffer_length` is 0), against `max_response_length`."""
        return group_overlong_penalties(
            groups,
            self.spec.max_response_length,
            self.spec.overlong_buffer_length,
            self.spec.overlong_penalty_factor,
        )

    def _in_loss(self, completion: Completion) -> bool:
        """Whether a completion's tokens enter the loss (not with `mask_truncated_completions`
        when it was truncated)."""
        return not (self.spec.mask_truncated_completions and is_truncated(completion))

    def updates(
        self, groups: Sequence[Group], advantages: Sequence[Sequence[float]] | None = None
    ) -> list[Update]:
        """The rollout batch as optimizer updates of `mini_batch_size` groups; each holds this
        rank's share of its groups (`[rank::world]`) packed into micro-batches by token budget.
        `advantages` (one list per group) default to `self.advantages(groups)`."""
        if advantages is None:
            advantages = self.advantages(groups)
        size = self.spec.mini_batch_size
        result = []
        for start in range(0, len(groups), size):
            chunk = list(groups[start : start + size])
            if len(chunk) < self.world_size:
                raise ValueError(f"an update needs at least one group per rank ({self.world_size})")
            mine = chunk[self.rank :: self.world_size]
            chunk_advantages = list(advantages[start : start + size])
            packed = pack_micro_batches(
                mine,
                chunk_advantages[self.rank :: self.world_size],
                self.spec.max_tokens_per_micro_batch,
            )
            result.append(
                Update(
                    micro_batches=[
                        collate_parts(parts, self.version, self.pad_token_id).to(self.device)
                        for parts in packed
                    ],
                    num_tokens=sum(
                        len(c.token_ids) for g in chunk for c in g.completions if self._in_loss(c)
                    ),
                    num_sequences=sum(1 for g in chunk for c in g.completions if self._in_loss(c)),
                )
            )
        return result

    def train_step(self, groups: Sequence[Group]) -> StepRecord:
        """One rollout batch into one policy version: `epochs_per_batch` passes of optimizer
        updates over mini-batches of `mini_batch_size` groups (all accepted)."""
        if len(groups) < self.world_size:
            raise ValueError(f"a step needs at least one group per rank ({self.world_size})")
        started = time.perf_counter()
        self.model.train()
        rewards = None
        if self.spec.kl_in_reward and self.spec.kl_beta > 0.0:
            rewards = self.kl_penalised_rewards(groups)
        penalties = self.overlong_penalties(groups)
        if self.spec.overlong_buffer_length > 0:
            base = [g.rewards for g in groups] if rewards is None else rewards
            rewards = [
                [r + p for r, p in zip(row, extra, strict=True)]
                for row, extra in zip(base, penalties, strict=True)
            ]
        updates = self.updates(groups, self.advantages(groups, rewards))
        if len(updates) * self.spec.epochs_per_batch > 1:
            self.keep_proximal_logprobs(updates)
        sums: Counter[str] = Counter()
        grad_norms, learning_rates = [], []
        for _ in range(self.spec.epochs_per_batch):
            for update in updates:
                for name, value in self.accumulate(update).items():
                    sums[name] = (
                        max(sums.get(name, value), value)
                        if name in MAX_METRICS
                        else (sums[name] + value)
                    )
                grad_norm, learning_rate = self.optimizer_step()
                grad_norms.append(grad_norm)
                learning_rates.append(learning_rate)
        reduced = self._all_reduce(sums)
        totals = {k: v if k in MAX_METRICS else v / len(grad_norms) for k, v in reduced.items()}
        return self._finish_step(
            groups,
            totals,
            sum(grad_norms) / len(grad_norms),
            learning_rates[-1],
            started,
            updates=len(grad_norms),
            penalties=penalties,
        )

    def keep_proximal_logprobs(self, updates: Sequence[Update]) -> None:
        """The logprobs of the weights at the start of the rollout batch, for every micro-batch
        of every update (the proximal policy of the decoupled objective)."""
        with torch.no_grad():
            for update in updates:
                for batch, _ in self._aligned(update.micro_batches):
                    with self._mixed_precision():
                        logprobs = self._logprobs(self.model, batch).logprobs
                        batch.proximal_logprobs = logprobs.float()

    def accumulate(self, update: Update) -> Counter[str]:
        """The gradient of one update, accumulated over its micro-batches (loss normalisers of
        the whole update, so the sum is the update's loss); returns metric sums."""
        sums: Counter[str] = Counter()
        batches = self._aligned(update.micro_batches)
        for index, (batch, weight) in enumerate(batches):
            with gradient_sync(self.model, enabled=index == len(batches) - 1):
                output = self._loss(batch, update.num_tokens, update.num_sequences)
                (output.loss * weight * self.world_size).backward()
            loss_tokens = int(batch.loss_mask(self.spec.mask_truncated_completions).sum().item())
            share = loss_tokens / max(update.num_tokens, 1) * self.world_size * weight
            for name, value in output.metrics().items():
                if name in MAX_METRICS:
                    sums[name] = max(sums.get(name, value), value)
                    continue
                summed = name in ("loss", "policy_loss")  # already normalised by the update's
                sums[name] += value * self.world_size * weight if summed else value * share
        return sums

    def optimizer_step(self) -> tuple[float, float]:
        """Clip, step, schedule; returns the gradient norm (before clipping) and the LR used."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
            grad_norm = grad_norm.full_tensor()
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm), float(learning_rate)

    def _aligned(self, batches: list[RolloutBatch]) -> list[tuple[RolloutBatch, float]]:
        """The micro-batches with their loss weights (1), padded with weight-0 repeats to the most
        any rank has: under FSDP2 every rank must run as many forwards as the others."""
        count = len(batches)
        if self.world_size > 1:
            most = torch.tensor([count], device=self.device)
            torch.distributed.all_reduce(most, op=torch.distributed.ReduceOp.MAX)
            count = int(most.item())
        weighted = [(batch, 1.0) for batch in batches]
        return weighted + [(batches[-1], 0.0)] * (count - len(batches))

    def _mixed_precision(self) -> Any:
        """bf16 autocast under `bf16-mixed` (fp32 master weights and optimizer); nothing else."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)

    def _logprobs(
        self, model: torch.nn.Module, batch: RolloutBatch, *, with_entropy: bool = False
    ) -> TokenLogprobs:
        """Completion logprobs (and entropies) with at most `logprob_chunk_tokens` tokens of
        logits at a time."""
        return chunked_completion_logprobs(
            model,
            batch,
            shared_prefix=not self.spec.gradient_checkpointing,
            chunk_tokens=self.spec.logprob_chunk_tokens,
            with_entropy=with_entropy,
            temperature=self.spec.temperature,
        )

    def _loss(self, batch: RolloutBatch, num_tokens: int, num_sequences: int) -> Any:
        with self._mixed_precision():
            policy = self._logprobs(self.model, batch, with_entropy=True)
        logprobs = policy.logprobs
        if batch.proximal_logprobs is None:
            proximal = logprobs.detach()
        else:
            proximal = batch.proximal_logprobs.to(logprobs.dtype)
        sampler = batch.behaviour_logprobs.to(proximal.dtype)
        behaviour = sampler
        if not self.spec.correct_engine_mismatch:
            on_policy = (batch.staleness == 0).unsqueeze(1)
            behaviour = torch.where(on_policy, proximal, sampler)
        ref = None
        if self.ref_model is not None:
            with torch.no_grad(), self._mixed_precision():
                ref = self._logprobs(self.ref_model, batch).logprobs
        return grpo_policy_loss(
            logprobs,
            proximal,
            behaviour,
            batch.advantages,
            batch.loss_mask(self.spec.mask_truncated_completions),
            self.loss_config,
            ref_logprobs=ref,
            num_tokens=num_tokens,
            num_sequences=num_sequences,
            entropy=policy.entropy,
            sampler_logprobs=sampler,
        )

    def _all_reduce(self, sums: Counter[str]) -> dict[str, float]:
        """Sum per-rank metric sums over ranks and divide by the world size (`MAX_METRICS`: their
        maximum over ranks)."""
        names = sorted(n for n in sums if n not in MAX_METRICS)
        highest = sorted(n for n in sums if n in MAX_METRICS)
        values = torch.tensor([sums[n] for n in names], dtype=torch.float64)
        maxima = torch.tensor([sums[n] for n in highest], dtype=torch.float64)
        if self.world_size > 1:
            torch.distributed.all_reduce(values)
            torch.distributed.all_reduce(maxima, op=torch.distributed.ReduceOp.MAX)
        result = {
            n: float(v) / self.world_size for n, v in zip(names, values.tolist(), strict=True)
        }
        result.update(zip(highest, maxima.tolist(), strict=True))
        return result

    def _finish_step(
        self,
        groups: Sequence[Group],
        totals: dict[str, float],
        grad_norm: float,
        learning_rate: float,
        started: float,
        *,
        updates: int,
        penalties: Sequence[Sequence[float]] = (),
    ) -> StepRecord:
        samples = sum(len(g.completions) for g in groups)
        tokens = sum(len(c.token_ids) for g in groups for c in g.completions)
        staleness = Counter(self.version - c.policy_version for g in groups for c in g.completions)
        counters = self.counters
        counters.version += 1
        counters.groups_trained += len(groups)
        counters.samples_trained += samples
        counters.tokens_trained += tokens
        for group in groups:
            self._mark_done(group)
        return StepRecord(
            version=counters.version,
            loss=totals.get("loss", 0.0),
            policy_loss=totals.get("policy_loss", 0.0),
            kl=totals.get("kl", 0.0),
            clip_fraction=totals.get("clip_fraction", 0.0),
            importance_weight_mean=totals.get("importance_weight_mean", 1.0),
            truncated_fraction=totals.get("truncated_fraction", 0.0),
            dual_clip_fraction=totals.get("dual_clip_fraction", 0.0),
            entropy=totals.get("entropy", 0.0),
            mismatch_ratio_mean=totals.get("mismatch_ratio_mean", 1.0),
            mismatch_ratio_max=totals.get("mismatch_ratio_max", 1.0),
            grad_norm=grad_norm if math.isfinite(grad_norm) else float("nan"),
            learning_rate=learning_rate,
            reward_mean=sum(sum(g.rewards) for g in groups) / max(samples, 1),
            reward_terms=reward_term_means(groups),
            reward_failures=reward_term_failures(groups),
            groups=len(groups),
            samples=samples,
            tokens=tokens,
            staleness=dict(staleness),
            seconds=time.perf_counter() - started,
            group_ids=[g.group_id for g in groups],
            updates=updates,
            truncated_completion_fraction=truncated_share(groups),
            overlong_penalty_mean=sum(sum(row) for row in penalties) / max(samples, 1),
        )

    def weights(self) -> dict[str, Tensor]:
        """The current full weights, for engines (every rank must call it under FSDP2); with
        LoRA the merged ones, under the base model's names. Without sharding these are (but for
        merged layers) the model's own tensors: copy them before changing them."""
        return self._merged(full_state_dict(self.model))

    def _merged(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.lora.merge(state) if self.lora is not None else state

    def save_model(self, folder: str | Path) -> None:
        """Write the current weights as a Hugging Face model folder (rank 0; every rank must
        call it under FSDP2); with LoRA the merged weights, and the adapter in `adapter/`."""
        state = full_state_dict(self.model)
        if self.rank == 0:
            self.model.save_pretrained(folder, state_dict=self._merged(state))  # type: ignore[operator]
            if self.lora is not None:
                self.lora.save_adapter(Path(folder) / ADAPTER_DIR, state)

    def save_checkpoint(self, root: str | Path, keep: int = 2) -> Path:
        """Write model (with LoRA: the adapter), optimizer, scheduler, RNG and counters to
        `<root>/step-<version>` atomically (rank 0 only), point `<root>/latest` at it, keep the
        newest `keep`."""
        root = Path(root)
        final = root / f"step-{self.version:06d}"
        weights = full_state_dict(self.model)
        optimizer = full_optimizer_state(self.model, self.optimizer)
        if self.rank == 0:
            staging = root / f".step-{self.version:06d}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            if self.lora is not None:
                self.lora.save_adapter(staging / ADAPTER_DIR, weights)
            else:
                self.model.save_pretrained(staging / MODEL_DIR, state_dict=weights)  # type: ignore[operator]
            torch.save(optimizer, staging / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), staging / "scheduler.pt")
            torch.save(rng_state(), staging / "rng.pt")
            (staging / STATE_FILE).write_text(json.dumps(asdict(self.counters)) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            write_text_atomically(root / LATEST_FILE, final.name)
            for old in sorted(root.glob("step-*"))[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        if self.world_size > 1:
            torch.distributed.barrier()
        return final

    def load_checkpoint(self, folder: str | Path) -> None:
        """Restore everything `save_checkpoint` wrote (weights included) from `folder`."""
        # deferred: heavy or optional (safetensors)
        from safetensors.torch import load_file

        folder = Path(folder)
        state: dict[str, Tensor] = {}
        if self.lora is not None:
            state = self.lora.adapter_state(folder / ADAPTER_DIR, self.device)
        for shard in sorted((folder / MODEL_DIR).glob("*.safetensors")) if not state else []:
            state.update(load_file(str(shard), device=str(self.device)))
        load_full_state_dict(self.model, state)
        # weights_only: tensors and plain containers, never code (a checkpoint folder may lie on
        # a volume others write to)
        optimizer = torch.load(folder / "optimizer.pt", weights_only=True)
        load_full_optimizer_state(self.model, self.optimizer, optimizer)
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        set_rng_state(torch.load(folder / "rng.pt", weights_only=True))
        self.counters = LearnerCounters(**json.loads((folder / STATE_FILE).read_text()))
        self._done = set(self.counters.done_prompts)


class BadCheckpoint(ValueError):
    """A checkpoint pointer that names something other than a checkpoint folder under its root."""


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint `<root>/latest` points at, if it exists. The pointer may only name a
    `step-<version>` folder directly inside `root` (no path, no link out): `BadCheckpoint` else."""
    root = Path(root)
    pointer = root / LATEST_FILE
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    if not CHECKPOINT_NAME.fullmatch(name):
        raise BadCheckpoint(f"{pointer} names {name!r}, not a step-<version> folder of {root}")
    folder = root / name
    if folder.is_symlink() or not folder.resolve().is_relative_to(root.resolve()):
        raise BadCheckpoint(f"{folder} leads outside {root}")
    return folder if (folder / STATE_FILE).exists() else None


def rng_state() -> dict[str, Any]:
    """Python, torch (and CUDA) RNG states, as tensors and plain values (loadable with
    `weights_only`)."""
    version, internal, gauss = random.getstate()
    python = {
        "version": version,
        "state": torch.tensor(internal, dtype=torch.int64),
        "gauss": gauss,
    }
    state: dict[str, Any] = {"python": python, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` saved."""
    python = state["python"]
    if isinstance(python, tuple):  # written before the state was saved as a tensor
        random.setstate(python)
    else:
        random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
