"""A tiny model that answers CommonsenseQA questions with a random letter in answer tags.

A random tiny model never writes `<answer>` tags, so every reward is 0 and GRPO's advantages and
loss are 0: metrics would be exported but flat. `answer_letter_model` trains the tiny model for a
few seconds (plain AdamW on the chat-formatted question → `<answer>X</answer>` with X drawn
uniformly from A–E) so that its samples are right about a fifth of the time and vary within a
group — enough for non-zero rewards, advantages and losses in service tests.
"""

from __future__ import annotations

import random
from pathlib import Path


def answer_letter_model(
    base: Path, out: Path, *, problems: int = 24, steps: int = 60, seed: int = 0
) -> Path:
    """Train a copy of the tiny model at `base` into `out` (an HF folder); returns `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skillfactory.prompts import question_prompt
    from skillfactory.tasks import get_task

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    examples = []
    for problem in get_task("csqa").problems(problems, seed=seed + 1):
        prompt = tokenizer.apply_chat_template(
            question_prompt(problem.question), tokenize=False, add_generation_prompt=True
        )
        completion = f"<answer>{rng.choice('ABCDE')}</answer><|im_end|>"
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        examples.append((prompt_ids + completion_ids, len(prompt_ids)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for step in range(steps):
        batch = [examples[(step * 8 + i) % len(examples)] for i in range(8)]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, prompt_length) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, prompt_length : len(ids)] = torch.tensor(ids[prompt_length:])
            mask[row, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
