"""Run spec ↔ protobuf: the two schemas stay in sync and conversion loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from skillfactory.contracts.runspec_proto import (
    run_spec_from_proto,
    run_spec_to_proto,
    schema_mismatches,
)
from skillfactory.runspec import InvalidRunSpec, RunSpec, load_run_spec
from skillfactory.v1 import runspec_pb2

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "every-field-set.yaml"


def test_schemas_have_the_same_fields() -> None:
    assert schema_mismatches() == []


def test_schema_check_notices_a_missing_proto_field() -> None:
    class Extra(RunSpec):
        brand_new: int = 0
        """A field the proto lacks."""

    assert schema_mismatches(Extra) == [
        "skillfactory.v1.RunSpec: no field for pydantic Extra.brand_new"
    ]


OTHER_MEMBERS = RunSpec.model_validate(
    {
        "engine": {
            "type": "transformers",
            "dtype": "float16",
            "max_batch_size": 3,
            "compile": False,
            "device": "cuda:1",
        },
        "queue": {"type": "inprocess", "max_size": 5},
    }
)


@pytest.mark.parametrize(
    "spec",
    [RunSpec(), load_run_spec(FIXTURE), OTHER_MEMBERS],
    ids=["defaults", "every-field", "other-union-members"],
)
def test_yaml_pydantic_proto_pydantic_round_trip(spec: RunSpec) -> None:
    message = run_spec_to_proto(spec)
    wire = message.SerializeToString()
    back = run_spec_from_proto(runspec_pb2.RunSpec.FromString(wire))
    assert back == spec
    assert back.model_dump() == spec.model_dump()


def test_optional_fields_keep_none_and_zero_apart() -> None:
    spec = RunSpec.model_validate({"data": {"seed": 0}})
    message = run_spec_to_proto(spec)
    assert message.data.HasField("seed") and message.data.seed == 0
    assert not message.sft.HasField("dataset")
    assert run_spec_from_proto(message).data.seed == 0
    assert run_spec_from_proto(message).sft.dataset is None


def test_union_members_map_to_oneof() -> None:
    spec = load_run_spec(FIXTURE)
    message = run_spec_to_proto(spec)
    assert message.WhichOneof("engine") == "vllm"
    assert message.WhichOneof("queue") == "redis"
    assert run_spec_to_proto(RunSpec()).WhichOneof("engine") == "transformers"


def test_invalid_proto_spec_names_the_field() -> None:
    message = run_spec_to_proto(RunSpec())
    message.grpo.loss = "l2"
    message.data.sampling.top_p = 3.0
    with pytest.raises(InvalidRunSpec) as caught:
        run_spec_from_proto(message)
    assert sorted(p.path for p in caught.value.problems) == ["data.sampling.top_p", "grpo.loss"]
