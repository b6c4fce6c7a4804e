"""LoRA on the tiny model: only adapters train, engines sample with the merged weights (their
logprobs equal the learner's), checkpoints hold a PEFT adapter and resume exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from skillfactory.engines.base import Completion, SamplingParams
from skillfactory.engines.transformers_engine import TransformersEngine
from skillfactory.group import Group
from skillfactory.train.learner import GRPOLearner
from skillfactory.train.rollout_batch import collate_groups
from skillfactory.train.token_logprobs import chunked_completion_logprobs

sys.path.insert(0, str(Path(__file__).parent))
from test_learner import PROBLEM, learner_on, load_model, make_group  # noqa: E402

pytest.importorskip("peft")

LORA = {"rank": 4, "alpha": 8.0}


def lora_learner(path: Path, **spec: object) -> GRPOLearner:
    return learner_on(path, lora=LORA, **spec)


def trained(path: Path) -> GRPOLearner:
    learner = lora_learner(path)
    learner.train_step([make_group(0, [1.0, 0.0]), make_group(1, [0.0, 1.0])])
    return learner


def test_only_the_adapters_train_and_sit_in_the_optimizer(tiny_model_dir: Path) -> None:
    learner = lora_learner(tiny_model_dir)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    optimized = [p for group in learner.optimizer.param_groups for p in group["params"]]
    names = {id(p): n for n, p in learner.model.named_parameters()}
    assert optimized and all(".lora_" in names[id(p)] for p in optimized)
    learner.train_step([make_group(0, [1.0, 0.0]), make_group(1, [0.0, 1.0])])
    after = learner.model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(".lora_" in k for k in changed)
    assert any(".lora_B." in k for k in changed)  # B starts at zero: the update moved it


def test_the_engine_samples_with_the_merged_weights(tiny_model_dir: Path) -> None:
    """The published weights carry the base model's names; an engine loaded with them gives the
    logprobs the learner computes for the same tokens (fp32, 1e-5), unlike the base model's."""
    learner = trained(tiny_model_dir)
    weights = learner.weights()
    assert set(weights) == set(load_model(tiny_model_dir).state_dict())
    engine = TransformersEngine(tiny_model_dir, device="cpu", max_batch_size=4)
    base = [c.logprobs for c in sample(engine)]
    engine.load_weights(weights, learner.version)
    completions = sample(engine)
    group = Group(
        group_id="g",
        problem=PROBLEM,
        prompt_token_ids=completions[0].prompt_token_ids,
        completions=completions,
        rewards=[0.0] * len(completions),
    )
    batch = collate_groups([group], [[0.0] * len(completions)], learner.version, pad_token_id=0)
    learner.model.eval()
    with torch.no_grad():
        ours = chunked_completion_logprobs(learner.model, batch).logprobs  # as the learner
    most = 0.0
    for row, completion in enumerate(completions):
        n = len(completion.token_ids)
        expected = torch.tensor(completion.logprobs)
        torch.testing.assert_close(ours[row, :n], expected, rtol=0, atol=1e-5)
        most = max(most, float((ours[row, :n] - torch.tensor(base[row][:n])).abs().max()))
    assert most > 1e-3, "the trained adapters should change the engine's logprobs"


def sample(engine: TransformersEngine) -> list[Completion]:
    params = SamplingParams(n=3, max_tokens=8, temperature=1.0, seed=5)
    return engine.generate(["the answer is"], params)[0]


def test_checkpoint_holds_a_peft_adapter_and_resumes_exactly(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from peft import PeftModel

    learner = trained(tiny_model_dir)
    folder = learner.save_checkpoint(tmp_path / "checkpoints")
    assert (folder / "adapter" / "adapter_config.json").exists()
    assert not (folder / "model").exists()
    ids = torch.tensor([[5, 6, 7, 30, 31, 32]])
    learner.model.eval()
    with torch.no_grad():
        expected = learner.model(ids).logits
        loaded = PeftModel.from_pretrained(load_model(tiny_model_dir), str(folder / "adapter"))
        torch.testing.assert_close(loaded(ids).logits, expected, rtol=0, atol=1e-5)

    twin = lora_learner(tiny_model_dir)
    twin.load_checkpoint(folder)
    assert twin.version == 1 and twin.is_done(0)
    step = [make_group(2, [1.0, 0.0]), make_group(3, [1.0, 0.0])]
    learner.train_step(step)
    twin.train_step(step)
    for (name, a), b in zip(
        learner.model.state_dict().items(), twin.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_the_final_model_folder_is_merged_with_the_adapter_beside(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    learner = trained(tiny_model_dir)
    learner.save_model(tmp_path / "model")
    assert (tmp_path / "model" / "adapter" / "adapter_model.safetensors").exists()
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"), dtype=torch.float32)
    ids = torch.tensor([[5, 6, 7, 30, 31, 32]])
    learner.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, learner.model(ids).logits, rtol=0, atol=1e-5)


def test_targets_that_match_nothing_are_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="match no layer|not found"):
        learner_on(tiny_model_dir, lora={"rank": 2, "target_modules": ["no_such_proj"]})
