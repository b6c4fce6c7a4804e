"""Tiny models built from a config, with a tokenizer trained here: for tests and GPU shape checks.

`build_tiny_model(path)` writes a standard Hugging Face model folder (Llama architecture, random
weights, a byte-level BPE tokenizer trained on task-like text, a ChatML chat template) in about a
second, so tests never need a hub or a large download. `smollm2_135m_config()` gives the shape of
SmolLM2-135M for throughput checks on a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML, the format SmolLM2 and Qwen2.5 use."""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
    words = [
        "the",
        "answer",
        "is",
        "step",
        "first",
        "then",
        "add",
        "subtract",
        "multiply",
        "divide",
        "numbers",
        "target",
        "use",
        "each",
        "once",
        "let",
        "me",
        "try",
        "again",
        "check",
        "this",
        "sample",
        "reflect",
        "verdict",
        "correct",
        "incorrect",
        "so",
        "final",
        "think",
        "plan",
        "alternatively",
        "restate",
        "question",
        "problem",
        "solve",
        "write",
        "expression",
        "equals",
        "result",
    ]
    tags = ["<answer>", "</answer>", "<think>", "</think>", "<sample>", "</sample>",
            "<reflect>", "</reflect>", "<verdict>", "</verdict>"]  # fmt: skip
    lines = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    lines += [
        f"{a} + {b} = {a + b}, {a} * {b} = {a * b}" for a in range(30) for b in range(0, 30, 7)
    ]
    lines += [" ".join(tags) + " Correct Incorrect"] * 5
    return lines


def train_tokenizer(vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer (transformers `PreTrainedTokenizerFast`) with ChatML specials."""
    # deferred: heavy or optional (tokenizers)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama_config(vocab_size: int, **overrides: Any) -> Any:
    """A Llama config of about half a million parameters (hidden 64, 2 layers)."""
    # deferred: heavy or optional (transformers)
    from transformers import LlamaConfig

    values: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def smollm2_135m_config(vocab_size: int = 49152) -> Any:
    """The shape of SmolLM2-135M: Llama, hidden 576, 30 layers, 9 heads, 3 KV heads."""
    # deferred: heavy or optional (transformers)
    from transformers import LlamaConfig

    values: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
    )
    return LlamaConfig(**values)


def build_tiny_model(path: str | Path, seed: int = 0, **config_overrides: Any) -> Path:
    """Write a random tiny Llama and its tokenizer as a Hugging Face model folder at `path`."""
    # deferred: heavy or optional (torch)
    import torch
    from transformers import LlamaForCausalLM

    path = Path(path)
    tokenizer = train_tokenizer()
    config = tiny_llama_config(len(tokenizer), **config_overrides)
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
