from skillfactory.v1 import data_pb2 as _data_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoreItem(_message.Message):
    __slots__ = ("problem", "response")
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    problem: _data_pb2.Problem
    response: str
    def __init__(self, problem: _Optional[_Union[_data_pb2.Problem, _Mapping]] = ..., response: _Optional[str] = ...) -> None: ...

class ScoreGroup(_message.Message):
    __slots__ = ("problem", "responses", "response_tokens")
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    problem: _data_pb2.Problem
    responses: _containers.RepeatedScalarFieldContainer[str]
    response_tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, problem: _Optional[_Union[_data_pb2.Problem, _Mapping]] = ..., responses: _Optional[_Iterable[str]] = ..., response_tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("items", "groups")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoreItem]
    groups: _containers.RepeatedCompositeFieldContainer[ScoreGroup]
    def __init__(self, items: _Optional[_Iterable[_Union[ScoreItem, _Mapping]]] = ..., groups: _Optional[_Iterable[_Union[ScoreGroup, _Mapping]]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("rewards",)
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    rewards: _containers.RepeatedCompositeFieldContainer[_data_pb2.Reward]
    def __init__(self, rewards: _Optional[_Iterable[_Union[_data_pb2.Reward, _Mapping]]] = ...) -> None: ...
