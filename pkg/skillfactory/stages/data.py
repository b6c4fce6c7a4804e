"""Stage 1: sample → grade → reflect → verdict filter → Algorithm 1, written as a dataset folder.

The folder (`<output_dir>/<run name>/data/`) holds:
- `samples.jsonl`: one record per problem with its graded samples and their reflections, in the
  composer's input format, so composition can be re-run alone (`skillfactory compose`);
- `sft.jsonl`: the silver SFT chats;
- `summary.json`: counts, accuracy per prompt variant, verdict accuracy, tokens, wall time.

Problems are processed in fixed chunks, each sampled with its own seed derived from the run seed
and the chunk index, and a chunk's records are appended in one write. An interrupted run is
resumed by skipping the chunks already complete in `samples.jsonl` (a half-written chunk is dropped
and redone), so it produces the same dataset as an uninterrupted run with the same seed.

Composition (verdict filter and Algorithm 1) runs in process with `skillfactory.compose.compose`
unless the stage is given another function of the same shape, such as
`skillfactory.serving.composer_client.ComposerClient.compose` (the composer service); the stage
writes `sft.jsonl` and `summary.json` itself either way.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillfactory.compose import (
    ComposeOptions,
    ComposeSummary,
    ProblemSamples,
    dump_record,
    parse_samples_record,
)
from skillfactory.compose import compose as compose_in_process
from skillfactory.engines import Completion, Engine, SamplingParams
from skillfactory.engines.base import ChatMessage
from skillfactory.engines.setup import sampling_params
from skillfactory.files import write_text_atomically
from skillfactory.parsing import last_block, parse_verdict
from skillfactory.prompts import (
    ANSWER_OPENER,
    HINT_PREFIX,
    VERDICT_OPENER,
    prompt_for_variant,
    reflection_prompt,
)
from skillfactory.run_folder import run_dir
from skillfactory.runspec import DataSpec, RunSpec
from skillfactory.seeds import data_stage_seed, derived_seed
from skillfactory.tasks import Problem, Task, get_task, grade, use_datasets

SAMPLES_FILE = "samples.jsonl"
SFT_FILE = "sft.jsonl"
SUMMARY_FILE = "summary.json"
COMPLETION_TOKENS = {"answer": 24, "verdict": 6}
"""Most tokens generated to complete an opened `<answer>` or `<verdict>` tag."""

ComposeFunction = Callable[
    [Iterable[ProblemSamples], ComposeOptions, ComposeSummary], Iterable[dict[str, Any]]
]
"""Composes SFT records from graded samples, accounting in the summary (`compose.compose`)."""


def data_dir(spec: RunSpec) -> Path:
    """Where stage 1 of this run writes its dataset."""
    return run_dir(spec) / "data"


def sft_dataset_path(spec: RunSpec) -> Path:
    """The silver SFT chats stage 1 of this run writes."""
    return data_dir(spec) / SFT_FILE


def solve_variants(data: DataSpec) -> list[str]:
    """The solve prompts used: the configured ones, plus their hint versions when rationalizing."""
    variants: list[str] = list(data.prompt_variants)
    if data.rationalization:
        variants += [HINT_PREFIX + v for v in data.prompt_variants]
    return variants


def chunk_size(data: DataSpec, max_batch_rows: int) -> int:
    """Problems per chunk: enough for their samples (all prompt variants) to fill one batch."""
    return max(1, max_batch_rows // (data.samples_per_variant * len(solve_variants(data))))


def chunks(problems: Sequence[Problem], size: int) -> Iterator[tuple[int, list[Problem]]]:
    """`(index, problems)` chunks in order; the split depends only on the spec."""
    for index, start in enumerate(range(0, len(problems), size)):
        yield index, list(problems[start : start + size])


@dataclass
class Stage1Counters:
    """What the sampling and reflection passes produced, for the summary."""

    samples: int = 0
    sample_tokens: int = 0
    reflection_tokens: int = 0
    correct_by_variant: Counter[str] = field(default_factory=Counter)
    samples_by_variant: Counter[str] = field(default_factory=Counter)
    verdicts_right: int = 0
    verdicts_wrong: int = 0
    verdicts_missing: int = 0

    def add_record(self, record: dict[str, Any]) -> None:
        """Count one problem's samples and reflections."""
        for sample in record["samples"]:
            self.samples += 1
            self.sample_tokens += sample.get("tokens", 0)
            self.samples_by_variant[sample["prompt_variant"]] += 1
            self.correct_by_variant[sample["prompt_variant"]] += int(sample["correct"])
            for reflection in sample["reflections"]:
                self.reflection_tokens += reflection.get("tokens", 0)
                verdict = parse_verdict(reflection["text"])
                if verdict is None:
                    self.verdicts_missing += 1
                elif verdict == sample["correct"]:
                    self.verdicts_right += 1
                else:
                    self.verdicts_wrong += 1

    def to_dict(self) -> dict[str, Any]:
        """The sampling part of `summary.json`."""
        reflections = self.verdicts_right + self.verdicts_wrong + self.verdicts_missing
        judged = self.verdicts_right + self.verdicts_wrong
        return {
            "samples": self.samples,
            "accuracy": _ratio(sum(self.correct_by_variant.values()), self.samples),
            "accuracy_per_prompt_variant": {
                v: _ratio(self.correct_by_variant[v], n)
                for v, n in sorted(self.samples_by_variant.items())
            },
            "reflections": reflections,
            "verdict_accuracy": _ratio(self.verdicts_right, reflections),
            "verdict_accuracy_when_given": _ratio(self.verdicts_right, judged),
            "verdicts_missing": self.verdicts_missing,
            "sample_tokens": self.sample_tokens,
            "reflection_tokens": self.reflection_tokens,
        }


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


class Stage1:
    """Runs stage 1 of a run spec with an engine (`Engine`); `compose` composes the traces
    (default: the library, in process)."""

    def __init__(
        self,
        spec: RunSpec,
        engine: Engine,
        max_batch_rows: int = 64,
        compose: ComposeFunction | None = None,
    ) -> None:
        self.spec = spec
        self.engine = engine
        self.compose: ComposeFunction = compose or compose_in_process
        use_datasets(spec.datasets)
        self.task: Task = get_task(spec.data.task)
        self.seed = data_stage_seed(spec)
        self.out = data_dir(spec)
        self.chunk_size = chunk_size(spec.data, max_batch_rows)

    def problems(self) -> list[Problem]:
        """The problems of this stage: a seeded draw from the task's default (training) split."""
        return self.task.problems(self.spec.data.num_problems, seed=self.seed)

    def run(self, on_progress: Callable[[int, int, int], None] | None = None) -> dict[str, Any]:
        """Sample what is missing, then compose and summarize; returns the summary."""
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        problems = self.problems()
        done = load_finished_chunks(self.out / SAMPLES_FILE, problems, self.chunk_size)
        finished = sum(len(c) for i, c in chunks(problems, self.chunk_size) if i in done)
        for index, chunk in chunks(problems, self.chunk_size):
            if index in done:
                continue
            records = self.sample_chunk(index, chunk)
            append_records(self.out / SAMPLES_FILE, records)
            finished += len(chunk)
            if on_progress is not None:
                on_progress(finished, len(problems), sum(len(r["samples"]) for r in records))
        summary = self.compose_and_summarize()
        summary["wall_seconds"] = round(time.perf_counter() - started, 2)
        write_json(self.out / SUMMARY_FILE, summary)
        return summary

    def sample_chunk(self, index: int, problems: list[Problem]) -> list[dict[str, Any]]:
        """Samples, grades and reflections for one chunk of problems."""
        data = self.spec.data
        records = [{**p.to_record(), "samples": []} for p in problems]
        asks = [
            (r, p, v) for r, p in zip(records, problems, strict=True) for v in solve_variants(data)
        ]
        prompts = [prompt_for_variant(p.question, v, p.answer) for _, p, v in asks]
        params = sampling_params(
            data.sampling, data.samples_per_variant, derived_seed(self.seed, index, "samples")
        )
        results = self.engine.generate(prompts, params)
        texts = self.maybe_complete(
            "answer", [(p, c.text) for p, r in zip(prompts, results, strict=True) for c in r]
        )
        for (record, problem, variant), completions in zip(asks, results, strict=True):
            record["samples"] += [
                self.graded(problem, variant, next(texts), c) for c in completions
            ]
        self.reflect(index, problems, records)
        return records

    def maybe_complete(
        self, tag: str, conversations: list[tuple[Sequence[ChatMessage], str]]
    ) -> Iterator[str]:
        """The responses, each completed from an opened `<tag>` when it lacks one and the spec
        asks for it (`data.complete_missing_tags`); greedy, a few tokens, stops at `</tag>`."""
        texts = [text for _, text in conversations]
        if self.spec.data.complete_missing_tags:
            opener = ANSWER_OPENER if tag == "answer" else VERDICT_OPENER
            missing = [i for i, text in enumerate(texts) if last_block(text, tag) is None]
            prompts = [
                [*conversations[i][0], {"role": "assistant", "content": texts[i].rstrip() + opener}]
                for i in missing
            ]
            params = SamplingParams(
                temperature=0.0, max_tokens=COMPLETION_TOKENS[tag], stop=(f"</{tag}>",)
            )
            results = self.engine.generate(prompts, params) if prompts else []
            for i, (completion,) in zip(missing, results, strict=True):
                texts[i] = f"{texts[i].rstrip()}{opener}{completion.text.strip()}</{tag}>"
        return iter(texts)

    def graded(
        self, problem: Problem, variant: str, text: str, completion: Completion
    ) -> dict[str, Any]:
        """One sample record: its text, prompt variant, grade and token count."""
        result = grade(self.task, problem, text)
        return {
            "text": text,
            "prompt_variant": variant,
            "correct": result.correct,
            "answer": result.answer,
            "tokens": len(completion.token_ids),
            "reflections": [],
        }

    def reflect(self, index: int, problems: list[Problem], records: list[dict[str, Any]]) -> None:
        """The same model critiques every sample; reflections are attached to their samples."""
        data = self.spec.data
        targets = [
            (problem, sample)
            for problem, record in zip(problems, records, strict=True)
            for sample in record["samples"]
        ]
        prompts = [reflection_prompt(problem.question, s["text"]) for problem, s in targets]
        params = sampling_params(
            data.reflection_sampling,
            data.reflections_per_sample,
            derived_seed(self.seed, index, "reflection"),
        )
        results = self.engine.generate(prompts, params)
        texts = self.maybe_complete(
            "verdict", [(p, c.text) for p, r in zip(prompts, results, strict=True) for c in r]
        )
        for (_, sample), completions in zip(targets, results, strict=True):
            sample["reflections"] = [
                {"text": text, "verdict": _verdict_word(text), "tokens": len(c.token_ids)}
                for c, text in ((c, next(texts)) for c in completions)
            ]

    def compose_and_summarize(self) -> dict[str, Any]:
        """Write `sft.jsonl` from `samples.jsonl` and return the summary (without wall time)."""
        data = self.spec.data
        options = ComposeOptions(
            variant=data.composition,
            seed=self.seed,
            max_samples_per_trace=data.max_samples_per_trace,
        )
        summary = options.new_summary()
        counters = Stage1Counters()
        items = []
        for line_number, record in enumerate(read_records(self.out / SAMPLES_FILE), start=1):
            counters.add_record(record)
            items.append(parse_samples_record(record, line_number))
        sft_lines = [dump_record(r) for r in self.compose(items, options, summary)]
        write_text_atomically(self.out / SFT_FILE, "".join(line + "\n" for line in sft_lines))
        return {
            "task": data.task,
            "model": self.spec.model,
            "problems": len(items),
            **counters.to_dict(),
            "composition": summary.to_dict(),
            "traces": len(sft_lines),
            "sft_chars": sum(len(line) for line in sft_lines),
        }


def _verdict_word(text: str) -> str | None:
    verdict = parse_verdict(text)
    return None if verdict is None else ("Correct" if verdict else "Incorrect")


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete JSON record of a JSONL file; a torn last line is skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                return
            yield json.loads(line)


def load_finished_chunks(path: Path, problems: Sequence[Problem], size: int) -> set[int]:
    """Indices of chunks whose every problem is in `path`; other records are removed from it."""
    present = {record["id"]: record for record in read_records(path)}
    done = {
        index
        for index, chunk in chunks(problems, size)
        if chunk and all(p.id in present for p in chunk)
    }
    keep_ids = [p.id for index, chunk in chunks(problems, size) if index in done for p in chunk]
    if len(keep_ids) != len(present) or (path.exists() and not _ends_with_newline(path)):
        text = "".join(json.dumps(present[i], ensure_ascii=False) + "\n" for i in keep_ids)
        write_text_atomically(path, text)
    return done


def _ends_with_newline(path: Path) -> bool:
    size = path.stat().st_size
    if size == 0:
        return True
    with path.open("rb") as handle:
        handle.seek(size - 1)
        return handle.read(1) == b"\n"


def append_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Append records in one write and make them durable before going on."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: Path, value: Any) -> None:
    """Write indented JSON atomically."""
    write_text_atomically(path, json.dumps(value, indent=2, sort_keys=True) + "\n")
