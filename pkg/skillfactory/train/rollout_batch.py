"""Groups as learner tensors, and the per-token logprobs of their completions under a model.

Layout (as TRL's `GRPOTrainer` uses): every sequence is its prompt, left-padded to the longest
prompt `P`, followed by its completion, right-padded to the longest completion `C`. The model then
only needs the last `C + 1` positions' logits (`logits_to_keep`), which keeps the `[B, C, vocab]`
logits tensor, the learner's largest, as small as it can be. Position ids count real tokens only,
so a left-padded prompt sees the same positions as unpadded.

The completions of a group share their prompt, so the prompt is run once per group
(`shared_prefix_logprobs`): its KV cache, which carries the gradient, is repeated for the group's
completions, which then attend to it. The result is the same as running every full sequence
(tested), with `G·P + B·C` tokens through the model instead of `B·(P + C)`.

An optimizer update's completions are cut into micro-batches by a token budget
(`pack_micro_batches`): whole groups while they fit, and a group too large for the budget in equal
parts (each part runs the prompt again), so one forward never holds more than the budget's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from skillfactory.group import Group
from skillfactory.train.overlong import is_truncated


@dataclass
class RolloutBatch:
    """The completions of some groups, padded into tensors (B sequences)."""

    input_ids: Tensor
    """`[B, P + C]` prompt and completion tokens (pad id where padded)."""
    attention_mask: Tensor
    """`[B, P + C]` 1 on real tokens."""
    position_ids: Tensor
    """`[B, P + C]` positions of real tokens (0 for the first prompt token)."""
    completion_ids: Tensor
    """`[B, C]` completion tokens."""
    completion_mask: Tensor
    """`[B, C]` 1 on real completion tokens."""
    behaviour_logprobs: Tensor
    """`[B, C]` logprobs the engine reported for the sampled tokens (0 on padding)."""
    staleness: Tensor
    """`[B]` learner version minus the completion's policy version."""
    advantages: Tensor
    """`[B]` group-normalised advantage of each completion."""
    rewards: Tensor
    """`[B]` reward of each completion."""
    prompt_ids: Tensor
    """`[G, P]` each group's prompt, left-padded (rows of a group are consecutive)."""
    prompt_mask: Tensor
    """`[G, P]` 1 on real prompt tokens."""
    group_size: int
    """Completions per group when every group has the same number, else 0."""
    truncated: Tensor | None = None
    """`[B]` bool: the engine cut the completion at its token budget (finish reason `length`);
    `collate_groups` always sets it (None only for batches built by hand: none truncated)."""
    proximal_logprobs: Tensor | None = None
    """`[B, C]` logprobs of the weights at the start of the rollout batch, when the batch trains
    in more than one optimizer update (None: the update's own forward pass stands for them)."""

    @property
    def num_tokens(self) -> int:
        """Real completion tokens."""
        return int(self.completion_mask.sum().item())

    def loss_mask(self, mask_truncated: bool) -> Tensor:
        """`[B, C]` the tokens the loss sees: `completion_mask`, without the rows of truncated
        completions when `mask_truncated` (`grpo.mask_truncated_completions`)."""
        if not mask_truncated or self.truncated is None:
            return self.completion_mask
        keep = (~self.truncated).to(self.completion_mask.dtype).unsqueeze(1)
        return self.completion_mask * keep

    def to(self, device: torch.device | str) -> RolloutBatch:
        """The same batch on `device`."""
        moved: dict[str, Any] = {
            k: v.to(device) if isinstance(v, Tensor) else v for k, v in vars(self).items()
        }
        return RolloutBatch(**moved)


@dataclass
class GroupPart:
    """Some consecutive completions of one group, with their advantages."""

    group: Group
    advantages: list[float]

    @property
    def rows(self) -> int:
        return len(self.group.completions)

    @property
    def width(self) -> int:
        """Prompt plus longest completion, in tokens."""
        longest = max((len(c.token_ids) for c in self.group.completions), default=0)
        return len(self.group.prompt_token_ids) + max(1, longest)


def split_group(group: Group, advantages: Sequence[float], budget: int) -> list[GroupPart]:
    """`group` in the fewest equal parts whose padded tokens (rows × width) fit `budget` (one
    completion per part at worst)."""
    whole = GroupPart(group, list(advantages))
    size = len(group.completions)
    fits = [d for d in range(size, 0, -1) if size % d == 0 and d * whole.width <= budget]
    part = fits[0] if fits else 1
    return [
        GroupPart(
            replace(
                group,
                completions=group.completions[start : start + part],
                rewards=group.rewards[start : start + part],
            ),
            list(advantages[start : start + part]),
        )
        for start in range(0, size, part)
    ]


def pack_micro_batches(
    groups: Sequence[Group], advantages: Sequence[Sequence[float]], budget: int
) -> list[list[GroupPart]]:
    """The parts of `groups` packed in order into micro-batches of at most `budget` padded tokens
    (rows × the widest row; a part larger than the budget alone)."""
    batches: list[list[GroupPart]] = []
    current: list[GroupPart] = []
    rows = width = 0
    for group, group_advantages in zip(groups, advantages, strict=True):
        for part in split_group(group, group_advantages, budget):
            grown = (rows + part.rows) * max(width, part.width)
            if current and grown > budget:
                batches.append(current)
                current, rows, width = [], 0, 0
            current.append(part)
            rows, width = rows + part.rows, max(width, part.width)
    if current:
        batches.append(current)
    return batches


def collate_parts(
    parts: Sequence[GroupPart], learner_version: int, pad_token_id: int
) -> RolloutBatch:
    """One micro-batch of group parts as learner tensors."""
    return collate_groups(
        [p.group for p in parts], [p.advantages for p in parts], learner_version, pad_token_id
    )


def collate_groups(
    groups: Sequence[Group],
    advantages: Sequence[Sequence[float]],
    learner_version: int,
    pad_token_id: int,
) -> RolloutBatch:
    """Pad the completions of `groups` (with one advantage per completion) into a batch."""
    prompts: list[list[int]] = []
    completions: list[list[int]] = []
    behaviour: list[list[float]] = []
    staleness: list[int] = []
    flat_advantages: list[float] = []
    rewards: list[float] = []
    truncated: list[bool] = []
    for group, group_advantages in zip(groups, advantages, strict=True):
        for completion, advantage, reward in zip(
            group.completions, group_advantages, group.rewards, strict=True
        ):
            if len(completion.logprobs) != len(completion.token_ids):
                raise ValueError(f"group {group.group_id}: logprobs and token ids differ in length")
            prompts.append(group.prompt_token_ids)
            completions.append(completion.token_ids)
            behaviour.append(completion.logprobs)
            staleness.append(learner_version - completion.policy_version)
            flat_advantages.append(float(advantage))
            rewards.append(float(reward))
            truncated.append(is_truncated(completion))
    prompt_len = max(len(p) for p in prompts)
    completion_len = max(1, max(len(c) for c in completions))
    size = len(prompts)
    input_ids = torch.full((size, prompt_len + completion_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    completion_mask = torch.zeros(size, completion_len, dtype=torch.long)
    behaviour_logprobs = torch.zeros(size, completion_len, dtype=torch.float32)
    for row, (prompt, tokens, logprobs) in enumerate(
        zip(prompts, completions, behaviour, strict=True)
    ):
        start = prompt_len - len(prompt)
        input_ids[row, start:prompt_len] = torch.tensor(prompt, dtype=torch.long)
        input_ids[row, prompt_len : prompt_len + len(tokens)] = torch.tensor(
            tokens, dtype=torch.long
        )
        attention_mask[row, start : prompt_len + len(tokens)] = 1
        completion_mask[row, : len(tokens)] = 1
        behaviour_logprobs[row, : len(logprobs)] = torch.tensor(logprobs, dtype=torch.float32)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    sizes = {len(group.completions) for group in groups}
    firsts = [sum(len(g.completions) for g in groups[:i]) for i in range(len(groups))]
    return RolloutBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        completion_ids=input_ids[:, prompt_len:],
        completion_mask=completion_mask,
        behaviour_logprobs=behaviour_logprobs,
        staleness=torch.tensor(staleness, dtype=torch.long),
        advantages=torch.tensor(flat_advantages, dtype=torch.float32),
        rewards=torch.tensor(rewards, dtype=torch.float32),
        prompt_ids=input_ids[firsts, :prompt_len],
        prompt_mask=attention_mask[firsts, :prompt_len],
        group_size=sizes.pop() if len(sizes) == 1 else 0,
        truncated=torch.tensor(truncated, dtype=torch.bool),
    )


def selected_logprobs(logits: Tensor, token_ids: Tensor) -> Tensor:
    """log softmax(logits)[token] per position, one row at a time (never a second
    `[B, C, vocab]` tensor): `[B, C, V]`, `[B, C]` → `[B, C]` in float32 or wider."""
    rows = []
    for row_logits, row_ids in zip(logits, token_ids, strict=True):
        row_logits = (
            row_logits.float() if row_logits.dtype in (torch.bfloat16, torch.half) else row_logits
        )
        picked = row_logits.gather(-1, row_ids.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row_logits, dim=-1))
    return torch.stack(rows)


def completion_logprobs(
    model: torch.nn.Module, batch: RolloutBatch, *, shared_prefix: bool = True
) -> Tensor:
    """`[B, C]` logprobs of the completion tokens under `model` (raw logits, temperature 1, as
    the engines report them): prompts once per group when the groups allow it and
    `shared_prefix` is on."""
    if shared_prefix and batch.group_size > 1:
        return shared_prefix_logprobs(model, batch)
    return full_sequence_logprobs(model, batch)


def full_sequence_logprobs(model: torch.nn.Module, batch: RolloutBatch) -> Tensor:
    """`[B, C]` completion logprobs from one forward pass over every full sequence."""
    completion_len = batch.completion_ids.shape[1]
    output = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=completion_len + 1,
        use_cache=False,
    )
    logits = output.logits[:, :-1, :]
    return selected_logprobs(logits, batch.completion_ids)


def shared_prefix_logprobs(model: torch.nn.Module, batch: RolloutBatch) -> Tensor:
    """`[B, C]` completion logprobs with each group's prompt run once: the prompt pass returns
    its KV cache (with gradient) and the last prompt position's logits (which predict the first
    completion token); both are repeated `group_size` times and the completions run on top."""
    prompt_len = batch.prompt_ids.shape[1]
    prompt = model(
        input_ids=batch.prompt_ids,
        attention_mask=batch.prompt_mask,
        position_ids=batch.position_ids[:: batch.group_size, :prompt_len],
        logits_to_keep=1,
        use_cache=True,
    )
    cache = prompt.past_key_values
    cache.batch_repeat_interleave(batch.group_size)
    output = model(
        input_ids=batch.completion_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids[:, prompt_len:],
        past_key_values=cache,
        use_cache=True,
    )
    first = prompt.logits[:, -1:, :].repeat_interleave(batch.group_size, dim=0)
    logits = torch.cat([first, output.logits[:, :-1, :]], dim=1)
    return selected_logprobs(logits, batch.completion_ids)
