"""Issue 15, finding 10: no per-run limits, so one submitter could hold the single run slot for
ever. The learner service takes run limits at start-up (`learner serve --max-steps …`, the
chart's `learner.limits`) and refuses a spec over one at submit time with INVALID_ARGUMENT naming
the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from skillfactory.cli import app
from skillfactory.contracts.runspec_proto import run_spec_to_proto
from skillfactory.run_limits import RunLimits, check_run_limits
from skillfactory.runspec import InvalidRunSpec, RunSpec, parse_run_spec
from skillfactory.serving.learner_api import LearnerServer, setup_learner_server
from skillfactory.serving.run_policy import RunPolicy
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.v1 import learner_pb2, learner_pb2_grpc

MODEL = "HuggingFaceTB/SmolLM2-135M"


def spec(**sections: object) -> RunSpec:
    return parse_run_spec({"name": "r", "model": MODEL, **sections})


def paths(error: pytest.ExceptionInfo[InvalidRunSpec]) -> set[str]:
    return {p.path for p in error.value.problems}


def test_no_limits_admit_anything() -> None:
    check_run_limits(spec(grpo={"steps": 10**9}), RunLimits())


@pytest.mark.parametrize(
    ("limits", "sections", "expected"),
    [
        (RunLimits(max_steps=100), {"grpo": {"steps": 101}}, {"grpo.steps"}),
        (
            RunLimits(max_problems=50),
            {
                "data": {"num_problems": 51},
                "grpo": {"num_problems": 51},
                "eval": {"num_problems": 51},
            },
            {"data.num_problems", "grpo.num_problems", "eval.num_problems"},
        ),
        (
            RunLimits(max_tokens=1024),
            {
                "data": {
                    "sampling": {"max_tokens": 2000},
                    "reflection_sampling": {"max_tokens": 9},
                },
                "grpo": {"max_response_length": 1025, "max_prompt_length": 512},
                "eval": {
                    "max_tokens": 4096,
                    "budget_forcing": {"first_budget": 8, "total_budget": 4096},
                },
                "sft": {"max_length": 2048},
            },
            {
                "data.sampling.max_tokens",
                "grpo.max_response_length",
                "eval.max_tokens",
                "eval.budget_forcing.total_budget",
                "sft.max_length",
            },
        ),
        (
            RunLimits(max_samples=8),
            {
                "data": {"samples_per_variant": 9},
                "grpo": {"group_size": 16},
                "eval": {"samples_per_problem": 4},
            },
            {"data.samples_per_variant", "grpo.group_size"},
        ),
        (RunLimits(max_epochs=1.0), {"sft": {"num_epochs": 2.0}}, {"sft.num_epochs"}),
    ],
)
def test_each_limit_names_the_fields_over_it(
    limits: RunLimits, sections: dict[str, object], expected: set[str]
) -> None:
    with pytest.raises(InvalidRunSpec) as error:
        check_run_limits(spec(**sections), limits)
    assert paths(error) == expected
    assert "the learner's limit" in str(error.value)


def test_the_spec_size_limit() -> None:
    with pytest.raises(InvalidRunSpec) as error:
        check_run_limits(spec(), RunLimits(max_spec_bytes=100), spec_bytes=101)
    assert paths(error) == {"<spec>"}
    check_run_limits(spec(), RunLimits(max_spec_bytes=100), spec_bytes=100)


@pytest.fixture
def limited_learner(tmp_path: Path) -> Iterator[LearnerServer]:
    """A learner with limits, its run controller not started (nothing needs to run here)."""
    config = ServingConfig(grace_s=0.0, linger_s=0.0)
    limits = RunLimits(max_steps=20, max_spec_bytes=4096)
    server = setup_learner_server(
        config, tmp_path / "state", policy=RunPolicy(tmp_path), limits=limits
    )
    ServiceServer.start(server)
    yield server
    server.controller.close()
    ServiceServer.stop(server, grace_s=0)


def test_submit_refuses_a_spec_over_a_limit_naming_the_field(
    limited_learner: LearnerServer,
) -> None:
    stub = learner_pb2_grpc.LearnerStub(grpc.insecure_channel(limited_learner.address))
    over = run_spec_to_proto(spec(grpo={"steps": 21}))
    with pytest.raises(grpc.RpcError) as error:
        stub.SubmitRun(learner_pb2.SubmitRunRequest(spec=over), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "grpo.steps" in error.value.details()  # type: ignore[attr-defined]

    large = run_spec_to_proto(spec(grpo={"steps": 20}))
    large.eval.tasks.extend(["countdown-3"] * 1000)
    with pytest.raises(grpc.RpcError) as error:
        stub.SubmitRun(learner_pb2.SubmitRunRequest(spec=large), timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "<spec>" in error.value.details()  # type: ignore[attr-defined]

    within = run_spec_to_proto(spec(grpo={"steps": 20}))
    assert stub.SubmitRun(learner_pb2.SubmitRunRequest(spec=within), timeout=5).run_id


def test_learner_serve_takes_the_limits_as_options() -> None:
    result = CliRunner().invoke(app, ["learner", "serve", "--help"], terminal_width=200)
    for option in (
        "--max-steps",
        "--max-problems",
        "--max-tokens",
        "--max-samples",
        "--max-epochs",
        "--max-spec-bytes",
    ):
        assert option in result.output, option
