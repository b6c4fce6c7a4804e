"""The wire layer: every domain object survives its protobuf message unchanged."""

from __future__ import annotations

import pytest

from skillfactory.compose import ComposeOptions, ProblemSamples, Reflection, Sample, compose
from skillfactory.engines.base import Completion, SamplingParams
from skillfactory.group import Group
from skillfactory.tasks.base import Problem
from skillfactory.v1 import data_pb2
from skillfactory.wire.messages import (
    MAX_N,
    InvalidMessage,
    add_summary,
    completion_from_proto,
    completion_to_proto,
    group_from_proto,
    group_to_proto,
    problem_from_proto,
    problem_samples_from_proto,
    problem_samples_to_proto,
    problem_to_proto,
    record_from_trace,
    sampling_from_proto,
    sampling_to_proto,
    summary_to_proto,
    trace_to_proto,
)

PROBLEM = Problem(
    "q1", "multiplication-2", "What is 12 * 34?", "408", {"a": 12, "b": 34, "w": [1.5, "x"]}
)


def a_group(version: int = 3) -> Group:
    completions = [
        Completion(f"<answer>{i}</answer>", [5, i], [-0.25, -1.5], "stop", version, [1, 2])
        for i in range(3)
    ]
    completions[2].finish_reason = "length"
    return Group("p4", PROBLEM, [1, 2], completions, [1.0, 0.0, 0.0], "s0", 4, "e1")


def test_a_problem_round_trips_with_integral_numbers_as_ints() -> None:
    back = problem_from_proto(problem_to_proto(PROBLEM))
    assert back == PROBLEM
    assert isinstance(back.data["a"], int) and isinstance(back.data["w"][0], float)


def test_a_group_round_trips_through_its_queue_message() -> None:
    group = a_group()
    message = group_to_proto(group, "run")
    assert message.run_id == "run" and message.policy_version == 3
    back = group_from_proto(data_pb2.Group.FromString(message.SerializeToString()))
    assert back.group_id == "p4" and back.prompt_index == 4 and back.epoch == "e1"
    assert back.problem == group.problem  # the prompt index rides along but is taken out
    assert back.prompt_token_ids == [1, 2] and back.sampler_id == "s0"
    assert [c.token_ids for c in back.completions] == [c.token_ids for c in group.completions]
    assert [c.finish_reason for c in back.completions] == ["stop", "stop", "length"]
    assert back.rewards == group.rewards
    assert back.completions[0].logprobs == pytest.approx(group.completions[0].logprobs)


def test_finish_reasons_and_unknown_ones() -> None:
    completion = Completion("x", [1], [0.0], "abort", 2, [7])
    assert completion_from_proto(completion_to_proto(completion)) == completion
    unspecified = data_pb2.Completion(text="x", finish_reason=data_pb2.FINISH_REASON_UNSPECIFIED)
    assert completion_from_proto(unspecified).finish_reason == "stop"


def test_sampling_round_trips_and_out_of_range_values_are_refused() -> None:
    params = SamplingParams(n=4, temperature=0.7, top_p=0.8, top_k=20, max_tokens=64, seed=3)
    assert sampling_from_proto(sampling_to_proto(params), 4) == params
    assert sampling_from_proto(None, 0) == SamplingParams(n=1)
    with pytest.raises(InvalidMessage, match="n must be"):
        sampling_from_proto(None, MAX_N + 1)
    with pytest.raises(InvalidMessage, match="sampling"):
        sampling_from_proto(data_pb2.SamplingParams(temperature=-1.0), 1)


def test_stage1_composer_contract_round_trips() -> None:
    samples = ProblemSamples(
        PROBLEM,
        (
            Sample(0, "<answer>408</answer>", "step_by_step", True, (Reflection("ok", True),)),
            Sample(1, "<answer>1</answer>", "restate", False, (Reflection("no", False),)),
        ),
    )
    back = problem_samples_from_proto(problem_samples_to_proto(samples))
    assert back == samples
    options = ComposeOptions(seed=0)
    summary = options.new_summary()
    records = list(compose([samples], options, summary))
    assert records and [record_from_trace(trace_to_proto(r)) for r in records] == records
    total = options.new_summary()
    add_summary(total, summary_to_proto(summary))
    assert total.to_dict() == summary.to_dict()
