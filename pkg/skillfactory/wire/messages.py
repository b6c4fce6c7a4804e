"""Every conversion between the library's objects and their protobuf messages, in one place.

Services, clients, sampler workers and the learner meet only here: whatever crosses a process
boundary (a queue entry, an RPC) is built and read by these functions, so a field is named and
converted once.

- `Problem` ↔ `skillfactory.v1.Problem` (its `data` is a `google.protobuf.Struct`; Struct stores
  every number as a double, so integral numbers come back as ints);
- `SamplingParams` ↔ `skillfactory.v1.SamplingParams` (`n` travels beside it, in the request or
  task); out-of-range values raise `InvalidMessage`;
- `Completion` ↔ `skillfactory.v1.Completion`, finish reasons included;
- `Group` ↔ `skillfactory.v1.Group` (the queue payload of a sampled group; the prompt index also
  rides in the problem's data as `_prompt_index`, as older groups carried it);
- stage 1's composer contract: `ProblemSamples` → `skillfactory.v1.ProblemSamples` and back, an
  SFT record ↔ `skillfactory.v1.Trace`, and `ComposeSummary` ↔ `skillfactory.v1.ComposeSummary`;
- generation tasks of stage 1 and eval: a prompt (chat or text) with its sampling and seed →
  `skillfactory.v1.GenerationTask`, and its completions → `skillfactory.v1.GenerationResult`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import struct_pb2

from skillfactory.compose import (
    ClassCounts,
    ComposeSummary,
    FilterCounts,
    ProblemSamples,
    Reflection,
    Sample,
    reflection_from_text,
)
from skillfactory.compose.record import UNKNOWN_PROMPT_VARIANT
from skillfactory.engines.base import Completion, FinishReason, Prompt, SamplingParams
from skillfactory.group import Group
from skillfactory.tasks.base import Problem
from skillfactory.v1 import composer_pb2, data_pb2

MAX_N = 1024
"""Most completions one prompt may ask for."""

PROMPT_INDEX_KEY = "_prompt_index"
"""Key of a group's prompt index in its problem's data on the wire."""

FINISH_TO_PROTO: dict[str, data_pb2.FinishReason] = {
    "stop": data_pb2.FINISH_REASON_STOP,
    "length": data_pb2.FINISH_REASON_LENGTH,
    "abort": data_pb2.FINISH_REASON_ABORT,
}
FINISH_FROM_PROTO: dict[int, FinishReason] = {
    data_pb2.FINISH_REASON_STOP: "stop",
    data_pb2.FINISH_REASON_LENGTH: "length",
    data_pb2.FINISH_REASON_ABORT: "abort",
}

_VERDICT_TO_PROTO = {
    True: data_pb2.VERDICT_CORRECT,
    False: data_pb2.VERDICT_INCORRECT,
    None: data_pb2.VERDICT_UNSPECIFIED,
}
_VERDICT_FROM_PROTO = {data_pb2.VERDICT_CORRECT: True, data_pb2.VERDICT_INCORRECT: False}


class InvalidMessage(ValueError):
    """A message whose values the library cannot accept; the text names the field."""


# ---- Struct ----------------------------------------------------------------------------------


def plain_value(value: struct_pb2.Value) -> Any:
    """A Struct value as plain Python, read field by field (the Struct mapping helpers are slow);
    integral numbers become ints."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() else number
    if kind == "string_value":
        return value.string_value
    if kind == "list_value":
        return [plain_value(inner) for inner in value.list_value.values]
    if kind == "struct_value":
        return plain_struct(value.struct_value)
    if kind == "bool_value":
        return value.bool_value
    return None


def plain_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a plain dict (see `plain_value`)."""
    return {key: plain_value(inner) for key, inner in struct.fields.items()}


# ---- problems and sampling -------------------------------------------------------------------


def problem_to_proto(problem: Problem) -> data_pb2.Problem:
    """The protobuf form of a problem."""
    message = data_pb2.Problem(
        id=problem.id, task=problem.task, question=problem.question, answer=problem.answer
    )
    message.data.update(problem.data)
    return message


def problem_from_proto(message: data_pb2.Problem) -> Problem:
    """The library's problem from its protobuf form."""
    data = plain_struct(message.data)
    return Problem(message.id, message.task, message.question, message.answer, data)


def sampling_to_proto(params: SamplingParams) -> data_pb2.SamplingParams:
    """The protobuf form of engine sampling parameters (`n` travels in the request)."""
    message = data_pb2.SamplingParams(
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        repetition_penalty=params.repetition_penalty,
        max_tokens=params.max_tokens,
        stop=list(params.stop),
    )
    if params.seed is not None:
        message.seed = params.seed
    return message


def sampling_from_proto(message: data_pb2.SamplingParams | None, n: int) -> SamplingParams:
    """Engine sampling parameters from their protobuf form. Fields left at zero where zero is not
    a valid value (top_p, repetition_penalty, max_tokens) take the engine defaults, as does n 0;
    temperature 0 is greedy and top_k 0 means no limit. Raises `InvalidMessage` for values out of
    range."""
    defaults = SamplingParams()
    n = n or 1  # unset
    if not 1 <= n <= MAX_N:
        raise InvalidMessage(f"n must be between 1 and {MAX_N}, got {n}")
    if message is None:
        return SamplingParams(n=n)
    try:
        return SamplingParams(
            n=n,
            temperature=message.temperature,
            top_p=message.top_p or defaults.top_p,
            top_k=int(message.top_k),
            repetition_penalty=message.repetition_penalty or defaults.repetition_penalty,
            max_tokens=int(message.max_tokens) or defaults.max_tokens,
            stop=tuple(message.stop),
            seed=int(message.seed) if message.HasField("seed") else None,
        )
    except ValueError as error:
        raise InvalidMessage(f"sampling: {error}") from None


# ---- completions and groups ------------------------------------------------------------------


def completion_to_proto(completion: Completion) -> data_pb2.Completion:
    """The protobuf form of a completion (an unknown finish reason is UNSPECIFIED)."""
    return data_pb2.Completion(
        text=completion.text,
        token_ids=completion.token_ids,
        logprobs=completion.logprobs,
        policy_version=completion.policy_version,
        finish_reason=FINISH_TO_PROTO.get(
            completion.finish_reason, data_pb2.FINISH_REASON_UNSPECIFIED
        ),
        prompt_token_ids=completion.prompt_token_ids,
    )


def completion_from_proto(message: data_pb2.Completion) -> Completion:
    """A completion from its protobuf form (an unspecified finish reason reads as `stop`)."""
    return Completion(
        text=message.text,
        token_ids=list(message.token_ids),
        logprobs=list(message.logprobs),
        finish_reason=FINISH_FROM_PROTO.get(message.finish_reason, "stop"),
        policy_version=message.policy_version,
        prompt_token_ids=list(message.prompt_token_ids),
    )


def group_to_proto(group: Group, run_id: str = "") -> data_pb2.Group:
    """The queue message of a group."""
    message = data_pb2.Group(
        run_id=run_id,
        group_id=group.group_id,
        policy_version=group.policy_version,
        sampler_id=group.sampler_id,
        epoch=group.epoch,
        prompt_index=group.prompt_index,
    )
    message.problem.CopyFrom(problem_to_proto(group.problem))
    message.problem.data.update({PROMPT_INDEX_KEY: group.prompt_index})
    terms = group.reward_terms or [{} for _ in group.rewards]
    failed = group.failed_terms or [() for _ in group.rewards]
    for completion, reward, values, failures in zip(
        group.completions, group.rewards, terms, failed, strict=True
    ):
        wire = message.completions.add()
        wire.CopyFrom(completion_to_proto(completion))
        wire.prompt_token_ids[:] = group.prompt_token_ids
        message.rewards.add(value=reward, correct=reward > 0, terms=values, failed_terms=failures)
    return message


def group_from_proto(message: data_pb2.Group) -> Group:
    """A group from its queue message."""
    problem = problem_from_proto(message.problem)
    prompt_index = int(problem.data.pop(PROMPT_INDEX_KEY, -1))
    completions = [completion_from_proto(c) for c in message.completions]
    return Group(
        group_id=message.group_id,
        problem=problem,
        prompt_token_ids=completions[0].prompt_token_ids if completions else [],
        completions=completions,
        rewards=[r.value for r in message.rewards],
        reward_terms=[dict(r.terms) for r in message.rewards],
        failed_terms=[tuple(r.failed_terms) for r in message.rewards],
        sampler_id=message.sampler_id,
        prompt_index=prompt_index,
        epoch=message.epoch,
    )


# ---- stage 1's composer contract -------------------------------------------------------------


def reflection_from_proto(message: data_pb2.Reflection) -> Reflection:
    """The message's verdict when set, else the one parsed from its text."""
    verdict = _VERDICT_FROM_PROTO.get(message.verdict)
    if verdict is None:
        return reflection_from_text(message.text)
    return Reflection(message.text, verdict)


def problem_samples_to_proto(item: ProblemSamples) -> data_pb2.ProblemSamples:
    """One problem's graded samples (verdicts as parsed, unset when None)."""
    message = data_pb2.ProblemSamples(problem=problem_to_proto(item.problem))
    for sample in item.samples:
        message.samples.add(
            text=sample.text,
            prompt_variant=sample.prompt_variant,
            correct=sample.correct,
            reflections=[
                data_pb2.Reflection(text=r.text, verdict=_VERDICT_TO_PROTO[r.verdict])
                for r in sample.reflections
            ],
        )
    return message


def problem_samples_from_proto(message: data_pb2.ProblemSamples) -> ProblemSamples:
    """One problem's graded samples, indexed in message order."""
    samples = tuple(
        Sample(
            index,
            sample.text,
            sample.prompt_variant or UNKNOWN_PROMPT_VARIANT,
            sample.correct,
            tuple(reflection_from_proto(r) for r in sample.reflections),
        )
        for index, sample in enumerate(message.samples)
    )
    return ProblemSamples(problem_from_proto(message.problem), samples)


def trace_to_proto(record: dict[str, Any]) -> data_pb2.Trace:
    """An SFT chat record (`skillfactory.compose.sft_record`) as a `Trace` message."""
    meta = record["meta"]
    return data_pb2.Trace(
        id=record["id"],
        messages=[
            data_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in record["messages"]
        ],
        n_correct=meta["n_correct"],
        n_incorrect=meta["n_incorrect"],
        variant=meta["variant"],
        problem_id=meta["problem_id"],
        task=meta["task"],
        ends_correct=meta["ends_correct"],
        sample_indices=meta["sample_indices"],
        prompt_variants=meta["prompt_variants"],
    )


def record_from_trace(trace: data_pb2.Trace) -> dict[str, Any]:
    """The SFT chat record of a trace: `skillfactory.compose.sft_record`'s keys, in its order."""
    return {
        "id": trace.id,
        "messages": [{"role": m.role, "content": m.content} for m in trace.messages],
        "meta": {
            "problem_id": trace.problem_id,
            "task": trace.task,
            "variant": trace.variant,
            "n_samples": len(trace.sample_indices),
            "n_correct": trace.n_correct,
            "n_incorrect": trace.n_incorrect,
            "ends_correct": trace.ends_correct,
            "sample_indices": list(trace.sample_indices),
            "prompt_variants": list(trace.prompt_variants),
        },
    }


def _class_counts_to_proto(counts: ClassCounts) -> composer_pb2.FilterClassCounts:
    return composer_pb2.FilterClassCounts(
        kept=counts.kept,
        dropped_mismatch=counts.dropped_mismatch,
        dropped_no_verdict=counts.dropped_no_verdict,
        dropped_malformed=counts.dropped_malformed,
    )


def _class_counts_from_proto(message: composer_pb2.FilterClassCounts) -> ClassCounts:
    return ClassCounts(
        message.kept,
        message.dropped_mismatch,
        message.dropped_no_verdict,
        message.dropped_malformed,
    )


def summary_to_proto(summary: ComposeSummary) -> composer_pb2.ComposeSummary:
    """Every count of the library's summary (its options are the request's)."""
    counts = summary.filter
    return composer_pb2.ComposeSummary(
        problems_in=summary.problems_in,
        problems_without_correct=summary.problems_without_correct,
        pairs_kept_correct=counts.correct.kept,
        pairs_kept_incorrect=counts.incorrect.kept,
        pairs_dropped_correct=counts.correct.dropped,
        pairs_dropped_incorrect=counts.incorrect.dropped,
        traces_out=summary.traces_out,
        problems_without_trace=summary.problems_without_trace,
        samples_in=summary.samples_in,
        samples_correct=summary.samples_correct,
        samples_unusable=counts.unusable_samples,
        filter_correct=_class_counts_to_proto(counts.correct),
        filter_incorrect=_class_counts_to_proto(counts.incorrect),
        trace_lengths=dict(summary.trace_lengths),
    )


def add_summary(summary: ComposeSummary, message: composer_pb2.ComposeSummary) -> None:
    """Account for one answer's counts in `summary` (the inverse of `summary_to_proto`, summed)."""
    summary.problems_in += message.problems_in
    summary.problems_without_correct += message.problems_without_correct
    summary.problems_without_trace += message.problems_without_trace
    summary.samples_in += message.samples_in
    summary.samples_correct += message.samples_correct
    summary.filter.add(
        FilterCounts(
            _class_counts_from_proto(message.filter_correct),
            _class_counts_from_proto(message.filter_incorrect),
            message.samples_unusable,
        )
    )
    summary.traces_out += message.traces_out
    summary.trace_lengths.update(dict(message.trace_lengths))


# ---- generation tasks (stage 1, eval) -----------------------------------------------------------


def prompt_fields(prompt: Prompt) -> dict[str, Any]:
    """The `messages` / `text` fields of a task carrying `prompt`."""
    if isinstance(prompt, str):
        return {"text": prompt}
    return {
        "messages": [
            data_pb2.ChatMessage(role=str(m.get("role", "")), content=str(m.get("content", "")))
            for m in prompt
        ]
    }


def task_prompt(task: data_pb2.GenerationTask) -> Prompt:
    """The engine prompt a generation task carries."""
    if task.messages:
        return [{"role": m.role, "content": m.content} for m in task.messages]
    return task.text


def generation_task(
    run_id: str,
    epoch: str,
    task_id: str,
    model_uri: str,
    prompt: Prompt,
    params: SamplingParams,
) -> data_pb2.GenerationTask:
    """The queue message asking a rollout worker for `params.n` completions of one prompt."""
    return data_pb2.GenerationTask(
        run_id=run_id,
        epoch=epoch,
        task_id=task_id,
        model_uri=model_uri,
        n=params.n,
        sampling=sampling_to_proto(params),
        **prompt_fields(prompt),
    )


def generation_result(
    task: data_pb2.GenerationTask, completions: Sequence[Completion], worker_id: str
) -> data_pb2.GenerationResult:
    """The answer to a generation task."""
    return data_pb2.GenerationResult(
        run_id=task.run_id,
        epoch=task.epoch,
        task_id=task.task_id,
        completions=[completion_to_proto(c) for c in completions],
        worker_id=worker_id,
    )
