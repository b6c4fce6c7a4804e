"""The checked-in generated code equals what `make proto` produces from proto/ now."""

from __future__ import annotations

from pathlib import Path

from skillfactory.contracts import codegen


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    fresh = codegen.generate(out_root=tmp_path)
    checked_in = codegen.PACKAGE_ROOT / codegen.GENERATED_PACKAGE
    fresh_names = sorted(p.name for p in fresh)
    assert fresh_names == sorted(p.name for p in checked_in.iterdir() if p.is_file()), (
        "file list differs: run `make proto`"
    )
    stale = [
        name
        for name in fresh_names
        if (tmp_path / codegen.GENERATED_PACKAGE / name).read_bytes()
        != (checked_in / name).read_bytes()
    ]
    assert stale == [], f"stale generated files {stale}: run `make proto`"


def test_every_service_of_the_design_is_defined() -> None:
    from skillfactory.v1 import composer_pb2, learner_pb2, reward_pb2, rollout_pb2

    services = {
        name
        for module in (composer_pb2, learner_pb2, reward_pb2, rollout_pb2)
        for name in module.DESCRIPTOR.services_by_name
    }
    assert services == {"Rollout", "RewardService", "Composer", "Learner"}


def test_completion_carries_what_the_off_policy_learner_needs() -> None:
    from skillfactory.v1 import data_pb2

    fields = set(data_pb2.Completion.DESCRIPTOR.fields_by_name)
    assert {"text", "token_ids", "logprobs", "policy_version", "finish_reason"} <= fields
