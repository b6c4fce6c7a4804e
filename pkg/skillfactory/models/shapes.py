"""Model shapes: the sizes the memory plan needs, for the models the paper's specs name and for
any local folder with a `config.json` (no weights are read, nothing is downloaded)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a decoder-only transformer."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    qkv_bias: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        """Width of the keys (and of the values) of one token in one layer."""
        return self.kv_heads * self.head_dim

    @property
    def layer_parameters(self) -> int:
        """Parameters of one decoder layer: attention, gated MLP, two norms."""
        attention = self.hidden * (self.hidden + 2 * self.kv_dim) + self.hidden * self.hidden
        bias = (self.hidden + 2 * self.kv_dim) if self.qkv_bias else 0
        return attention + bias + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def parameters(self) -> int:
        """All parameters: embeddings (and an untied head), layers, final norm."""
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return embeddings + self.layers * self.layer_parameters + self.hidden


QWEN25_1_5B = ModelShape(1536, 28, 12, 2, 8960, 151_936, tied_embeddings=True)

KNOWN_SHAPES: dict[str, ModelShape] = {
    "qwen/qwen2.5-0.5b-instruct": ModelShape(896, 24, 14, 2, 4864, 151_936, True),
    "qwen/qwen2.5-1.5b-instruct": QWEN25_1_5B,
    "qwen/qwen2.5-3b-instruct": ModelShape(2048, 36, 16, 2, 11008, 151_936, True),
    "qwen/qwen2.5-7b-instruct": ModelShape(3584, 28, 28, 4, 18944, 152_064, False),
    "deepseek-ai/deepseek-r1-distill-qwen-1.5b": ModelShape(1536, 28, 12, 2, 8960, 151_936, False),
    "deepseek-ai/deepseek-r1-distill-qwen-7b": ModelShape(3584, 28, 28, 4, 18944, 152_064, False),
    "huggingfacetb/smollm2-135m-instruct": ModelShape(576, 30, 9, 3, 1536, 49_152, True, False),
    "smollm2-135m-instruct": ModelShape(576, 30, 9, 3, 1536, 49_152, True, False),
}
"""Shapes from the models' published `config.json` files, by lower-cased hub id or short name."""


def shape_from_config(config: dict[str, object]) -> ModelShape:
    """The shape a Hugging Face `config.json` describes."""

    def number(key: str, default: object = None) -> int:
        value = config.get(key, default)
        if not isinstance(value, int):
            raise ValueError(f"config.json has no integer {key!r}")
        return value

    heads = number("num_attention_heads")
    return ModelShape(
        hidden=number("hidden_size"),
        layers=number("num_hidden_layers"),
        heads=heads,
        kv_heads=number("num_key_value_heads", heads),
        intermediate=number("intermediate_size"),
        vocab=number("vocab_size"),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
    )


def shape_of(model: str) -> ModelShape | None:
    """The shape of a model named by hub id, short name or local folder; None when unknown."""
    known = KNOWN_SHAPES.get(model.strip().lower())
    if known is not None:
        return known
    config = Path(model) / "config.json"
    if config.is_file():
        return shape_from_config(json.loads(config.read_text()))
    return None
