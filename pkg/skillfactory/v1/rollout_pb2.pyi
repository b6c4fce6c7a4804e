from skillfactory.v1 import data_pb2 as _data_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateRequest(_message.Message):
    __slots__ = ("prompts", "n", "sampling", "apply_chat_template", "run_id")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    APPLY_CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedScalarFieldContainer[str]
    n: int
    sampling: _data_pb2.SamplingParams
    apply_chat_template: bool
    run_id: str
    def __init__(self, prompts: _Optional[_Iterable[str]] = ..., n: _Optional[int] = ..., sampling: _Optional[_Union[_data_pb2.SamplingParams, _Mapping]] = ..., apply_chat_template: _Optional[bool] = ..., run_id: _Optional[str] = ...) -> None: ...

class PromptCompletions(_message.Message):
    __slots__ = ("prompt_index", "completions")
    PROMPT_INDEX_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    prompt_index: int
    completions: _containers.RepeatedCompositeFieldContainer[_data_pb2.Completion]
    def __init__(self, prompt_index: _Optional[int] = ..., completions: _Optional[_Iterable[_Union[_data_pb2.Completion, _Mapping]]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("results", "policy_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PromptCompletions]
    policy_version: int
    def __init__(self, results: _Optional[_Iterable[_Union[PromptCompletions, _Mapping]]] = ..., policy_version: _Optional[int] = ...) -> None: ...

class UpdateWeightsRequest(_message.Message):
    __slots__ = ("update",)
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    update: _data_pb2.WeightUpdate
    def __init__(self, update: _Optional[_Union[_data_pb2.WeightUpdate, _Mapping]] = ...) -> None: ...

class UpdateWeightsResponse(_message.Message):
    __slots__ = ("policy_version", "load_seconds")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    load_seconds: float
    def __init__(self, policy_version: _Optional[int] = ..., load_seconds: _Optional[float] = ...) -> None: ...

class GetPolicyVersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPolicyVersionResponse(_message.Message):
    __slots__ = ("policy_version", "model")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    model: str
    def __init__(self, policy_version: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...
