"""Stage 1 composing through the composer service (a real gRPC server on loopback): the client
gives the library's records and summary, and a pipeline with a cluster's composer address writes
the same `samples.jsonl`, `sft.jsonl` and `summary.json` as the in-process stage, also on resume;
the composer's traces counter rises by the traces stage 1 wrote."""

from __future__ import annotations

import json
import random
import re
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from skillfactory.compose import (
    VARIANTS,
    ComposeOptions,
    compose,
    dump_record,
    parse_samples_record,
)
from skillfactory.engines.base import Completion, Prompt, SamplingParams
from skillfactory.engines.transformers_engine import TransformersEngine
from skillfactory.parsing import extract_answer
from skillfactory.prompts import HINT_PREFIX
from skillfactory.queue.redis_server import free_port
from skillfactory.runspec import RedisQueueSpec, RunSpec
from skillfactory.serving.composer import setup_composer_server
from skillfactory.serving.composer_client import ComposerClient, ComposerError
from skillfactory.serving.server import ServiceServer, ServingConfig
from skillfactory.stages.data import SAMPLES_FILE, SFT_FILE, SUMMARY_FILE, data_dir
from skillfactory.stages.pipeline import Pipeline
from skillfactory.stages.rollouts import Cluster
from skillfactory.tasks import get_task

TRACES = "skillfactory_composer_traces_composed_total"
REQUESTS = "skillfactory_composer_requests_total"
TOKEN = "stage-1-secret"


@pytest.fixture
def composer() -> Iterator[ServiceServer]:
    """A composer server that needs `TOKEN` and has no data root (it writes nothing)."""
    server = setup_composer_server(
        ServingConfig(grace_s=1.0, linger_s=0.0, token=TOKEN), data_root=None
    )
    server.start()
    yield server
    server.stop(grace_s=0)


def _series(server: ServiceServer, name: str) -> float:
    assert server.metrics_url is not None
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and not sample.labels
    ]
    assert len(values) == 1, name
    return values[0]


# ---- the client against the library, on hand-made records ---------------------------------------


def _sample(rng: random.Random, answer: str, index: int) -> dict[str, Any]:
    correct = rng.random() < 0.5
    text = f"Attempt {index}: compute.\n<answer>{answer if correct else '1 + 1'}</answer>"
    if rng.random() < 0.1:
        text = f"Attempt {index}: <think>tags that break a trace</think> <answer>{answer}</answer>"
    elif rng.random() < 0.1:
        text = f"Attempt {index}: no answer at all"
    reflections = []
    for number in range(rng.choice([0, 1, 2, 3])):
        ending = rng.choice(
            ["<verdict>Correct</verdict>", "<verdict>Incorrect</verdict>", "<verdict>Maybe", "."]
        )
        if rng.random() < 0.05:
            ending = "<answer>7</answer> <verdict>Correct</verdict>"  # malformed
        reflections.append({"text": f"Check {number} of attempt {index}. {ending}"})
    variant = rng.choice(["step_by_step", "plan_then_execute", HINT_PREFIX + "alternatives"])
    return {
        "text": text,
        "prompt_variant": variant,
        "correct": correct,
        "reflections": reflections,
    }


def _records(n: int = 30, seed: int = 0) -> list[dict[str, Any]]:
    """Countdown input records with a mix of right, wrong, unusable and reflection-less samples;
    one problem has no samples and one no correct sample."""
    rng = random.Random(seed)
    records = []
    for number, problem in enumerate(get_task("countdown-3").problems(n, seed=seed)):
        count = 0 if number == 3 else rng.randint(1, 10)
        samples = [_sample(rng, problem.answer, i) for i in range(count)]
        if number == 5:
            for sample in samples:
                sample["correct"] = False
        records.append({**problem.to_record(), "samples": samples})
    return records


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_client_composes_the_library_records_and_summary_in_several_requests(
    composer: ServiceServer, variant: str
) -> None:
    items = [parse_samples_record(record, line) for line, record in enumerate(_records(), 1)]
    options = ComposeOptions(variant=variant, seed=11, max_samples_per_trace=3)
    local_summary = options.new_summary()
    local = list(compose(items, options, local_summary))
    assert local, "the batch must compose traces"

    client = ComposerClient(composer.address, TOKEN, batch_bytes=4096)
    try:
        remote_summary = options.new_summary()
        remote = client.compose(items, options, remote_summary)
    finally:
        client.close()

    assert [dump_record(r) for r in remote] == [dump_record(r) for r in local]  # key order too
    assert remote_summary.to_dict() == local_summary.to_dict()
    assert local_summary.problems_without_correct >= 2 and local_summary.filter.unusable_samples
    assert _series(composer, TRACES) == len(local)
    assert _series(composer, REQUESTS) > 1, "batch_bytes splits the problems over requests"


def test_a_wrong_token_and_an_unreachable_composer_are_errors_naming_the_address(
    composer: ServiceServer,
) -> None:
    items = [parse_samples_record(_records(2)[0], 1)]
    options = ComposeOptions()
    for token in (None, "wrong"):
        with pytest.raises(ComposerError, match=re.escape(composer.address)) as refused:
            ComposerClient(composer.address, token).compose(items, options, options.new_summary())
        assert "UNAUTHENTICATED" in str(refused.value)
    nowhere = f"127.0.0.1:{free_port()}"
    with pytest.raises(ComposerError, match=f"composer service at {nowhere} is unreachable"):
        ComposerClient(nowhere, TOKEN).compose(items, options, options.new_summary())
    assert _series(composer, REQUESTS) == 0


# ---- stage 1 on the tiny model, through the pipeline ---------------------------------------------

QUESTION = re.compile(r"What is (\d+) \* (\d+)\?")


class AnsweringEngine:
    """The real tiny engine, whose completions get an answer (right for about every other one)
    and whose reflections get a verdict (right about three times in four), so that stage 1 has
    traces to compose; a random 0.1M-parameter model alone composes none."""

    def __init__(self, engine: TransformersEngine) -> None:
        self.engine = engine
        self.calls = 0

    @property
    def policy_version(self) -> int:
        return self.engine.policy_version

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        self.calls += 1
        results = self.engine.generate(prompts, params)
        for prompt, completions in zip(prompts, results, strict=True):
            content = prompt if isinstance(prompt, str) else str(prompt[-1]["content"])
            left, right = map(int, QUESTION.findall(content)[0])
            for i, completion in enumerate(completions):
                salt = zlib.crc32(f"{i}{completion.text}".encode())
                if "<verdict>" in content:
                    response = content.split("Response:", 1)[1]
                    right_answer = extract_answer(response) == str(left * right)
                    verdict = right_answer == (salt % 4 != 0)
                    completion.text += f"<verdict>{'Correct' if verdict else 'Incorrect'}</verdict>"
                else:
                    completion.text += f" <answer>{left * right + salt % 2}</answer>"
        return results

    def close(self) -> None:
        """The module's engine outlives each pipeline."""


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> AnsweringEngine:
    return AnsweringEngine(TransformersEngine(tiny_model_dir, device="cpu", max_batch_size=16))


def _spec(model: Path, out: Path) -> RunSpec:
    return RunSpec.model_validate(
        {
            "name": "tiny",
            "model": str(model),
            "output_dir": str(out),
            "stages": ["data"],
            "engine": {"type": "transformers", "max_batch_size": 16},
            "data": {
                "task": "multiplication-1",
                "num_problems": 4,
                "samples_per_variant": 2,
                "reflections_per_sample": 2,
                "sampling": {"max_tokens": 6},
                "reflection_sampling": {"max_tokens": 4},
            },
        }
    )


def _outputs(spec: RunSpec) -> dict[str, Any]:
    out = data_dir(spec)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    summary.pop("wall_seconds")
    return {
        "files": {name: (out / name).read_bytes() for name in (SAMPLES_FILE, SFT_FILE)},
        "summary": summary,
        "folder": sorted(path.name for path in out.iterdir()),
    }


def test_stage1_through_the_composer_writes_the_in_process_dataset_also_on_resume(
    composer: ServiceServer, engine: AnsweringEngine, tiny_model_dir: Path, tmp_path: Path
) -> None:
    local = _spec(tiny_model_dir, tmp_path / "local")
    Pipeline(local, engine_factory=lambda _: engine).run()
    expected = _outputs(local)
    traces = len(expected["files"][SFT_FILE].splitlines())
    assert traces > 0 and expected["summary"]["traces"] == traces
    assert _series(composer, TRACES) == 0

    client = ComposerClient(composer.address, TOKEN)
    cluster = Cluster(
        RedisQueueSpec(url="redis://127.0.0.1:1/0"),  # unused: the run has no GRPO stage
        tmp_path / "weights",
        compose=client.compose,
    )
    remote = _spec(tiny_model_dir, tmp_path / "remote")
    results = Pipeline(remote, engine_factory=lambda _: engine, cluster=cluster).run()
    assert _outputs(remote) == expected
    assert results["data"]["traces"] == traces
    assert _series(composer, TRACES) == traces
    assert _series(composer, REQUESTS) == 1

    calls = engine.calls
    Pipeline(remote, engine_factory=lambda _: engine, cluster=cluster).run()  # a resumed run
    assert engine.calls == calls, "every chunk was sampled: only composition runs again"
    assert _outputs(remote) == expected
    assert _series(composer, TRACES) == 2 * traces
    client.close()


def test_stage1_fails_naming_an_unreachable_composer(
    engine: AnsweringEngine, tiny_model_dir: Path, tmp_path: Path
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    client = ComposerClient(nowhere, TOKEN)
    cluster = Cluster(RedisQueueSpec(), tmp_path / "weights", compose=client.compose)
    spec = _spec(tiny_model_dir, tmp_path)
    with pytest.raises(ComposerError, match=f"composer service at {nowhere} is unreachable"):
        Pipeline(spec, engine_factory=lambda _: engine, cluster=cluster).run()
    assert (data_dir(spec) / SAMPLES_FILE).exists() and not (data_dir(spec) / SFT_FILE).exists()
