from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_ABORT: _ClassVar[FinishReason]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_CORRECT: _ClassVar[Verdict]
    VERDICT_INCORRECT: _ClassVar[Verdict]
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_ABORT: FinishReason
VERDICT_UNSPECIFIED: Verdict
VERDICT_CORRECT: Verdict
VERDICT_INCORRECT: Verdict

class Problem(_message.Message):
    __slots__ = ("id", "task", "question", "answer", "data")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    task: str
    question: str
    answer: str
    data: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., task: _Optional[str] = ..., question: _Optional[str] = ..., answer: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "repetition_penalty", "max_tokens", "stop", "seed")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REPETITION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    max_tokens: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., repetition_penalty: _Optional[float] = ..., max_tokens: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...

class Completion(_message.Message):
    __slots__ = ("text", "token_ids", "logprobs", "policy_version", "finish_reason", "prompt_token_ids", "prompt_variant")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VARIANT_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    policy_version: int
    finish_reason: FinishReason
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    prompt_variant: str
    def __init__(self, text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., logprobs: _Optional[_Iterable[float]] = ..., policy_version: _Optional[int] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., prompt_variant: _Optional[str] = ...) -> None: ...

class Reward(_message.Message):
    __slots__ = ("value", "correct", "answer", "error", "terms", "failed_terms")
    class TermsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    FAILED_TERMS_FIELD_NUMBER: _ClassVar[int]
    value: float
    correct: bool
    answer: str
    error: str
    terms: _containers.ScalarMap[str, float]
    failed_terms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, value: _Optional[float] = ..., correct: _Optional[bool] = ..., answer: _Optional[str] = ..., error: _Optional[str] = ..., terms: _Optional[_Mapping[str, float]] = ..., failed_terms: _Optional[_Iterable[str]] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("run_id", "group_id", "problem", "prompt", "completions", "rewards", "policy_version", "sampler_id", "epoch", "prompt_index")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PROMPT_INDEX_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    group_id: str
    problem: Problem
    prompt: str
    completions: _containers.RepeatedCompositeFieldContainer[Completion]
    rewards: _containers.RepeatedCompositeFieldContainer[Reward]
    policy_version: int
    sampler_id: str
    epoch: str
    prompt_index: int
    def __init__(self, run_id: _Optional[str] = ..., group_id: _Optional[str] = ..., problem: _Optional[_Union[Problem, _Mapping]] = ..., prompt: _Optional[str] = ..., completions: _Optional[_Iterable[_Union[Completion, _Mapping]]] = ..., rewards: _Optional[_Iterable[_Union[Reward, _Mapping]]] = ..., policy_version: _Optional[int] = ..., sampler_id: _Optional[str] = ..., epoch: _Optional[str] = ..., prompt_index: _Optional[int] = ...) -> None: ...

class Reflection(_message.Message):
    __slots__ = ("text", "verdict")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    text: str
    verdict: Verdict
    def __init__(self, text: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("text", "prompt_variant", "correct", "reflections", "answer")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VARIANT_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    REFLECTIONS_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    text: str
    prompt_variant: str
    correct: bool
    reflections: _containers.RepeatedCompositeFieldContainer[Reflection]
    answer: str
    def __init__(self, text: _Optional[str] = ..., prompt_variant: _Optional[str] = ..., correct: _Optional[bool] = ..., reflections: _Optional[_Iterable[_Union[Reflection, _Mapping]]] = ..., answer: _Optional[str] = ...) -> None: ...

class ProblemSamples(_message.Message):
    __slots__ = ("problem", "samples")
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    problem: Problem
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    def __init__(self, problem: _Optional[_Union[Problem, _Mapping]] = ..., samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Trace(_message.Message):
    __slots__ = ("id", "messages", "n_correct", "n_incorrect", "variant", "problem_id", "task", "ends_correct", "sample_indices", "prompt_variants")
    ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    N_CORRECT_FIELD_NUMBER: _ClassVar[int]
    N_INCORRECT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ENDS_CORRECT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDICES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VARIANTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    n_correct: int
    n_incorrect: int
    variant: str
    problem_id: str
    task: str
    ends_correct: bool
    sample_indices: _containers.RepeatedScalarFieldContainer[int]
    prompt_variants: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., n_correct: _Optional[int] = ..., n_incorrect: _Optional[int] = ..., variant: _Optional[str] = ..., problem_id: _Optional[str] = ..., task: _Optional[str] = ..., ends_correct: _Optional[bool] = ..., sample_indices: _Optional[_Iterable[int]] = ..., prompt_variants: _Optional[_Iterable[str]] = ...) -> None: ...

class WeightUpdate(_message.Message):
    __slots__ = ("run_id", "version", "uri", "checksum")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    version: int
    uri: str
    checksum: str
    def __init__(self, run_id: _Optional[str] = ..., version: _Optional[int] = ..., uri: _Optional[str] = ..., checksum: _Optional[str] = ...) -> None: ...

class RolloutTask(_message.Message):
    __slots__ = ("run_id", "epoch", "prompt_index", "problem", "n", "sampling", "model_uri", "weights_uri")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PROMPT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    MODEL_URI_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_URI_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    epoch: str
    prompt_index: int
    problem: Problem
    n: int
    sampling: SamplingParams
    model_uri: str
    weights_uri: str
    def __init__(self, run_id: _Optional[str] = ..., epoch: _Optional[str] = ..., prompt_index: _Optional[int] = ..., problem: _Optional[_Union[Problem, _Mapping]] = ..., n: _Optional[int] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., model_uri: _Optional[str] = ..., weights_uri: _Optional[str] = ...) -> None: ...

class GenerationTask(_message.Message):
    __slots__ = ("run_id", "epoch", "task_id", "model_uri", "messages", "text", "n", "sampling")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_URI_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    epoch: str
    task_id: str
    model_uri: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    text: str
    n: int
    sampling: SamplingParams
    def __init__(self, run_id: _Optional[str] = ..., epoch: _Optional[str] = ..., task_id: _Optional[str] = ..., model_uri: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., text: _Optional[str] = ..., n: _Optional[int] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ...) -> None: ...

class GenerationResult(_message.Message):
    __slots__ = ("run_id", "epoch", "task_id", "completions", "worker_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    epoch: str
    task_id: str
    completions: _containers.RepeatedCompositeFieldContainer[Completion]
    worker_id: str
    def __init__(self, run_id: _Optional[str] = ..., epoch: _Optional[str] = ..., task_id: _Optional[str] = ..., completions: _Optional[_Iterable[_Union[Completion, _Mapping]]] = ..., worker_id: _Optional[str] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("stream", "entry_id", "payload", "deliveries", "reason", "worker_id")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    stream: str
    entry_id: str
    payload: bytes
    deliveries: int
    reason: str
    worker_id: str
    def __init__(self, stream: _Optional[str] = ..., entry_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., deliveries: _Optional[int] = ..., reason: _Optional[str] = ..., worker_id: _Optional[str] = ...) -> None: ...
